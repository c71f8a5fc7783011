"""Open the store the CLI and drivers use: `DATABASE_URL` or embedded PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from controller.adapters.embedded import Database, pgdata_for
from controller.adapters.postgres import CANNOT_CONNECT, Store, describe_dsn
from controller.adapters.secretbox import KeySource
from controller.core.errors import StoreUnavailableError


@asynccontextmanager
async def open_store(
    data_dir: Path,
    database_url: str | None,
    progress: Callable[[str], None] | None = None,
    *,
    keep_running: bool = False,
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[Store]:
    """A migrated `Store` for the duration of the block.

    `database_url` (e.g. $DATABASE_URL) is used as given; otherwise the embedded
    server of `data_dir` is started or joined, and released on exit (stopped
    only if no other process still uses it, unless `keep_running`).

    Secret values are encrypted with $WSCTL_SECRET_KEY (of `environ`, default
    the process environment) or else the key file `<data_dir>/secret.key`,
    created on first use, with `DATABASE_URL` too: every process that reads
    the secrets of one database needs the same key.
    """
    async with Database(data_dir, database_url, keep_running=keep_running,
                        progress=progress) as dsn:
        try:
            store = await Store.connect(dsn, secret_key=KeySource.for_data_dir(data_dir, environ))
        except StoreUnavailableError as exc:
            if not database_url:
                raise
            raise StoreUnavailableError(
                f"{exc}; check DATABASE_URL, or unset it to use the embedded PostgreSQL"
            ) from exc
        try:
            yield store
        finally:
            await store.close()


CONNECT_TIMEOUT = 10.0


async def probe_database(data_dir: Path, database_url: str | None) -> str:
    """One line on the database wsctl would use, after really connecting to it:
    $DATABASE_URL, or the embedded server of `data_dir` (started, or joined if a
    controller runs it, and released as `wsctl run` would). Raises
    `StoreUnavailableError` or `EmbeddedPostgresError` when it cannot."""
    started = time.monotonic()
    async with Database(data_dir, database_url) as dsn:
        try:
            conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
        except CANNOT_CONNECT as exc:
            hint = "; check DATABASE_URL" if database_url else ""
            raise StoreUnavailableError(
                f"cannot connect to the database at {describe_dsn(dsn)}: "
                f"{' '.join(str(exc).split()) or type(exc).__name__}{hint}") from exc
        try:
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
    elapsed = time.monotonic() - started
    if database_url:
        return f"DATABASE_URL answers: PostgreSQL {version} at {describe_dsn(database_url)}"
    return (f"embedded PostgreSQL {version} in {pgdata_for(data_dir)} answers "
            f"({elapsed:.1f}s to start or join it)")
