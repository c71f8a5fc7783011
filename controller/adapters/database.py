"""Open the store the CLI and drivers use: `DATABASE_URL` or embedded PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from controller.adapters.embedded import Database
from controller.adapters.postgres import Store
from controller.adapters.secretbox import KeySource


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
        store = await Store.connect(dsn, secret_key=KeySource.for_data_dir(data_dir, environ))
        try:
            yield store
        finally:
            await store.close()
