"""Integration fixtures, on the session's PostgreSQL (`pg_server` and `fresh_dsn`,
shared with the operator tests: tests/conftest.py).

Fixtures:
* `data_dir`   (test): an empty folder for a wsctl data dir (see `new_data_dir`).
* `store`      (test): a migrated `Store` on `fresh_dsn`, closed after the test; its
  secret key is a key file in a temp folder (`secret_key_file`).
* `db`         (test): a direct asyncpg connection to the `store`'s database, for
  reading raw rows and ageing them.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from controller.adapters.postgres import Store
from controller.adapters.secretbox import KeySource
from tests.conftest import new_data_dir as new_data_dir


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = new_data_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def secret_key_file(tmp_path: Path) -> Path:
    """Where the `store` fixture's secret key file is created on first use."""
    return tmp_path / "secret.key"


@pytest.fixture
async def store(fresh_dsn: str, secret_key_file: Path) -> AsyncIterator[Store]:
    # An explicit empty environment: a WSCTL_SECRET_KEY of the caller is not used.
    opened = await Store.connect(fresh_dsn, secret_key=KeySource(secret_key_file, {}))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def db(store: Store) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(store.dsn)
    try:
        yield conn
    finally:
        await conn.close()
