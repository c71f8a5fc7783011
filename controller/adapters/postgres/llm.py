"""The LLM gateway's tables (issue 15): workspace LLM credentials, stored as their
sha256 only, and per-day usage totals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

import asyncpg

from controller.adapters.postgres.base import _translated
from controller.adapters.postgres.tokens import _check_token_hash
from controller.core.usage import Usage

if TYPE_CHECKING:
    from controller.adapters.postgres.base import _Pool


@dataclass(frozen=True)
class LlmCredentialRecord:
    """One generation's credential, as the gateway checks it (`LlmCredentialRow`)."""

    workspace_id: str
    generation: int
    provider: str
    base_url: str | None
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = None
    """Credentials do not expire on their own: they end with their generation."""


@dataclass(frozen=True)
class UsageRecord:
    """One workspace's LLM use through the gateway on one UTC day, per provider."""

    workspace_id: str
    day: date
    provider: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int

    @property
    def tokens(self) -> int:
        return (self.input_tokens + self.output_tokens + self.cache_creation_tokens
                + self.cache_read_tokens)


def _credential(row: asyncpg.Record) -> LlmCredentialRecord:
    return LlmCredentialRecord(row["workspace_id"], row["generation"], row["provider"],
                               row["base_url"], row["created_at"], row["revoked_at"])


def _usage(row: asyncpg.Record) -> UsageRecord:
    return UsageRecord(row["workspace_id"], row["day"], row["provider"], row["requests"],
                       row["errors"], row["input_tokens"], row["output_tokens"],
                       row["cache_creation_tokens"], row["cache_read_tokens"])


class LlmMixin:
    """`Store` methods over llm_credentials and llm_usage."""

    _pool: _Pool

    @_translated
    async def put_llm_credential(self, workspace_id: str, generation: int,
                                 credential_hash: str, provider: str,
                                 base_url: str | None) -> LlmCredentialRecord:
        """Record the credential minted for a container generation (its sha256 hex).
        A retried create mints again: the newer one replaces the row of its generation
        (the container created with the older one is replaced too)."""
        _check_token_hash(credential_hash)
        row = await self._pool.fetchrow(
            """
            INSERT INTO llm_credentials (workspace_id, generation, credential_hash, provider,
                                         base_url)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (workspace_id, generation) DO UPDATE
               SET credential_hash = excluded.credential_hash, provider = excluded.provider,
                   base_url = excluded.base_url, created_at = now(), revoked_at = NULL
            RETURNING *
            """, workspace_id, generation, credential_hash, provider, base_url)
        assert row is not None
        return _credential(row)

    @_translated
    async def find_llm_credential(self, credential_hash: str) -> LlmCredentialRecord | None:
        """The credential with this hash, live or revoked (to tell stale from invalid)."""
        row = await self._pool.fetchrow(
            "SELECT * FROM llm_credentials WHERE credential_hash = $1", credential_hash)
        return None if row is None else _credential(row)

    @_translated
    async def record_llm_usage(self, workspace_id: str, day: date, provider: str,
                               usage: Usage, *, error: bool) -> None:
        """Add one call to the workspace's totals for `day` (one statement, atomic)."""
        await self._pool.execute(
            """
            INSERT INTO llm_usage AS u (workspace_id, day, provider, requests, errors,
                                        input_tokens, output_tokens, cache_creation_tokens,
                                        cache_read_tokens)
            VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8)
            ON CONFLICT (workspace_id, day, provider) DO UPDATE
               SET requests = u.requests + 1, errors = u.errors + excluded.errors,
                   input_tokens = u.input_tokens + excluded.input_tokens,
                   output_tokens = u.output_tokens + excluded.output_tokens,
                   cache_creation_tokens = u.cache_creation_tokens
                                           + excluded.cache_creation_tokens,
                   cache_read_tokens = u.cache_read_tokens + excluded.cache_read_tokens
            """, workspace_id, day, provider, int(error), usage.input, usage.output,
            usage.cache_creation, usage.cache_read)

    @_translated
    async def llm_usage(self, workspace_id: str | None = None, *, since: date | None = None,
                        limit: int = 1000) -> list[UsageRecord]:
        """Usage rows, newest day first (one workspace's, or every workspace's)."""
        rows = await self._pool.fetch(
            "SELECT * FROM llm_usage WHERE ($1::text IS NULL OR workspace_id = $1) "
            "AND ($2::date IS NULL OR day >= $2) "
            "ORDER BY day DESC, workspace_id, provider LIMIT $3",
            workspace_id, since, limit)
        return [_usage(r) for r in rows]

    @_translated
    async def llm_tokens_on(self, workspace_id: str, day: date) -> int:
        """Every token the workspace's calls used on `day` (UTC), all providers."""
        value = await self._pool.fetchval(
            "SELECT coalesce(sum(input_tokens + output_tokens + cache_creation_tokens "
            "+ cache_read_tokens), 0) FROM llm_usage WHERE workspace_id = $1 AND day = $2",
            workspace_id, day)
        return int(value)
