"""`Store`: the table-family mixins over one asyncpg pool, opened by `connect`.

`connect` opens the pool (connection setup in `base.py`), applies pending
migrations and encrypts legacy plaintext secrets; `close` closes the pool and
the store's listeners. The methods per table live in the mixins.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import asyncpg

from controller.adapters.postgres.base import (
    CANNOT_CONNECT,
    _init_connection,
    _reset_connection,
    _translated,
    describe_dsn,
)
from controller.adapters.postgres.history import HistoryMixin
from controller.adapters.postgres.listener import WorkspaceListener
from controller.adapters.postgres.llm import LlmMixin
from controller.adapters.postgres.migrate import AppliedMigration, apply_migrations
from controller.adapters.postgres.registry import RegistryMixin
from controller.adapters.postgres.retention import RetentionMixin
from controller.adapters.postgres.secrets import SecretsMixin
from controller.adapters.postgres.tokens import TokensMixin
from controller.adapters.postgres.workspaces import WorkspacesMixin
from controller.adapters.secretbox import KeySource
from controller.core.errors import StoreUnavailableError

if TYPE_CHECKING:
    from controller.adapters.postgres.base import _Pool


class Store(WorkspacesMixin, SecretsMixin, TokensMixin, RegistryMixin, HistoryMixin,
            RetentionMixin, LlmMixin):
    """Async access to the wsctl database over an asyncpg pool."""

    def __init__(self, pool: _Pool, dsn: str, secret_key: KeySource | None = None) -> None:
        self._pool = pool
        self._dsn = dsn
        self._listener: WorkspaceListener | None = None
        self._secret_key = secret_key

    @property
    def dsn(self) -> str:
        """The connection string (for tools that read the database directly)."""
        return self._dsn

    @classmethod
    @_translated
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float | None = 60.0,
        secret_key: KeySource | None = None,
    ) -> Store:
        """Open a pool on `dsn`, apply pending migrations, encrypt legacy secrets.

        `secret_key` encrypts and decrypts secret values (`open_store` passes the
        data dir's); without one the secret methods that need a key fail, naming
        the problem. A malformed $WSCTL_SECRET_KEY or an unsafe key file fails
        here, at start, not at the first secret read.
        """
        if secret_key is not None:
            secret_key.check()
        try:
            pool: _Pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                command_timeout=command_timeout,
                init=_init_connection,
                reset=_reset_connection,
            )
        except CANNOT_CONNECT as exc:
            raise StoreUnavailableError(
                f"cannot connect to the database at {describe_dsn(dsn)}: "
                f"{' '.join(str(exc).split()) or type(exc).__name__}") from exc
        try:
            async with pool.acquire() as conn:
                await apply_migrations(conn)
            store = cls(pool, dsn, secret_key)
            await store.encrypt_plaintext_secrets()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        await self._pool.close()

    @_translated
    async def controller_key(self, name: str, size: int = 32) -> bytes:
        """The controller's key for `name`, made (random, `size` bytes) by the first
        process that asks; every later call, here or in another process, reads it."""
        value = await self._pool.fetchval(
            "WITH made AS (INSERT INTO controller_keys (name, value) VALUES ($1, $2) "
            "ON CONFLICT (name) DO NOTHING RETURNING value) "
            "SELECT value FROM made UNION ALL "
            "SELECT value FROM controller_keys WHERE name = $1 LIMIT 1",
            name, secrets.token_bytes(size))
        if value is None:  # another process inserted it after this statement's snapshot
            value = await self._pool.fetchval(
                "SELECT value FROM controller_keys WHERE name = $1", name)
        return bytes(value)

    @_translated
    async def applied_migrations(self) -> list[AppliedMigration]:
        rows = await self._pool.fetch(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
        )
        return [AppliedMigration(r["version"], r["name"], r["checksum"], r["applied_at"])
                for r in rows]
