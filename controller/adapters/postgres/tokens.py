"""The tokens table: one live token per workspace, stored as its sha256 digest."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from controller.adapters.postgres.base import ConflictError, _translated
from controller.adapters.postgres.rows import TokenRecord, _token

if TYPE_CHECKING:
    from controller.adapters.postgres.base import _Pool

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_REVOKE_LLM = ("UPDATE llm_credentials SET revoked_at = now() WHERE workspace_id = $1 "
               "AND revoked_at IS NULL")
"""Revokes a workspace's LLM credentials with its tokens (the generation test added)."""


async def _token_statement(pool: _Pool, workspace_id: str, generation: int, sql: str,
                           *args: object) -> asyncpg.Record | None:
    """Run one token-writing statement; a unique violation is a `ConflictError` naming it."""
    try:
        return await pool.fetchrow(sql, workspace_id, generation, *args)
    except asyncpg.UniqueViolationError as exc:
        raise ConflictError(
            f"token for {workspace_id} generation {generation}: "
            f"{exc.constraint_name or 'unique'} violated"
        ) from None


def _check_token_hash(token_hash: str) -> None:
    if not _SHA256_HEX.match(token_hash):
        raise ValueError("token_hash must be the sha256 hex digest of the token, not the token")


class TokensMixin:
    """`Store` methods over the tokens table."""

    _pool: _Pool

    @_translated
    async def insert_token(
        self,
        workspace_id: str,
        generation: int,
        token_hash: str,
        container_id: str | None = None,
        *,
        expires_at: datetime | None = None,
        revoke_others: bool = True,
    ) -> TokenRecord:
        """Record a new live token (its sha256 hex, never the token).

        With `revoke_others` (the default) other live tokens of the workspace
        are revoked in the same transaction. The database allows one live
        token per workspace and one row per (workspace, generation): a
        violation raises `ConflictError`.
        """
        _check_token_hash(token_hash)
        # One statement (atomic, one round trip): the INSERT reads the whole
        # revoking UPDATE first (count(*)), so the old live row is no longer
        # live when the one-live-token index checks the new one.
        revoke = ("UPDATE tokens SET revoked_at = now() WHERE workspace_id = $1 "
                  "AND revoked_at IS NULL AND generation <> $2 RETURNING 1"
                  if revoke_others else "SELECT 1 WHERE false")
        # The LLM credentials of the other generations end with their tokens (a
        # data-modifying WITH runs whether or not the INSERT reads it).
        revoke_llm = (_REVOKE_LLM + " AND generation <> $2" if revoke_others
                      else "SELECT 1 WHERE false")
        row = await _token_statement(
            self._pool, workspace_id, generation,
            f"""
            WITH revoked AS ({revoke}), llm AS ({revoke_llm})
            INSERT INTO tokens (workspace_id, generation, rotation, token_hash, container_id,
                                expires_at)
            SELECT $1, $2, 0, $3, $4, $5 FROM (SELECT count(*) FROM revoked) AS done
            RETURNING *
            """,  # noqa: S608 - one of two constant texts
            token_hash, container_id, expires_at)
        assert row is not None
        return _token(row)

    @_translated
    async def rotate_token(self, workspace_id: str, generation: int, token_hash: str, *,
                           expires_at: datetime | None) -> TokenRecord:
        """Refresh the current token of `generation` without a new generation.

        The new row becomes current; the one it replaces is marked superseded but
        stays valid until its own expiry, so an agent that has not re-read its
        token file yet keeps working. `ConflictError` when `generation` is not
        the workspace's current generation (a recreate got there first).
        """
        _check_token_hash(token_hash)
        row = await _token_statement(
            self._pool, workspace_id, generation,
            """
            WITH current AS (
                UPDATE tokens SET superseded_at = now() WHERE workspace_id = $1
                   AND generation = $2 AND revoked_at IS NULL AND superseded_at IS NULL
                RETURNING rotation, container_id)
            INSERT INTO tokens (workspace_id, generation, rotation, token_hash, container_id,
                                expires_at)
            SELECT $1, $2, rotation + 1, $3, container_id, $4 FROM current
            RETURNING *
            """,
            token_hash, expires_at)
        if row is None:
            raise ConflictError(f"token for {workspace_id} generation {generation}: not the "
                                "current generation, nothing to refresh")
        return _token(row)

    @_translated
    async def set_token_container(
        self, workspace_id: str, generation: int, container_id: str
    ) -> bool:
        row = await self._pool.fetchrow(
            "UPDATE tokens SET container_id = $3 WHERE workspace_id = $1 AND generation = $2 "
            "RETURNING 1",
            workspace_id, generation, container_id,
        )
        return row is not None

    @_translated
    async def revoke_tokens(self, workspace_id: str, except_generation: int | None = None) -> int:
        """Revoke live tokens (and LLM credentials) of the workspace (but
        `except_generation`); how many tokens."""
        result = await self._pool.execute(
            f"WITH llm AS ({_REVOKE_LLM} AND ($2::integer IS NULL OR generation <> $2)) "  # noqa: S608 - constants
            "UPDATE tokens SET revoked_at = now() WHERE workspace_id = $1 "
            "AND revoked_at IS NULL AND ($2::integer IS NULL OR generation <> $2)",
            workspace_id, except_generation,
        )
        return int(result.rsplit(" ", 1)[-1])

    @_translated
    async def live_token(self, workspace_id: str) -> TokenRecord | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM tokens WHERE workspace_id = $1 AND revoked_at IS NULL "
            "AND superseded_at IS NULL", workspace_id
        )
        return None if row is None else _token(row)

    @_translated
    async def find_token(self, token_hash: str) -> TokenRecord | None:
        """The token with this hash, live or revoked (to tell stale from invalid)."""
        row = await self._pool.fetchrow("SELECT * FROM tokens WHERE token_hash = $1", token_hash)
        return None if row is None else _token(row)

    @_translated
    async def latest_token_generation(self, workspace_id: str) -> int:
        """Highest token generation ever recorded for the workspace (0 if none)."""
        value = await self._pool.fetchval(
            "SELECT coalesce(max(generation), 0) FROM tokens WHERE workspace_id = $1",
            workspace_id,
        )
        return int(value)
