"""The embedded PostgreSQL wrapper: idempotent start, shared lifetime across processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from controller.adapters.database import open_store
from controller.adapters.embedded import (
    POSTGRES_BIN_PATH,
    Database,
    EmbeddedPostgres,
    pgdata_for,
)
from controller.adapters.postgres import Store, StoreUnavailableError
from controller.api.a2a import A2AProxy, AgentTarget
from controller.api.admin import AdminApi, admin_auth, json_errors
from controller.api.registry import Registry
from controller.core import tokens
from controller.core.model import Workspace, WorkspaceKey

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
SUBPROCESS_TIMEOUT = 60.0

# A short-lived wsctl-like process: opens the store (embedded) and exits.
CHILD = """
import asyncio, os, sys
from pathlib import Path
from controller.adapters.database import open_store

async def main() -> None:
    async with open_store(Path(sys.argv[1]), None) as store:
        await store.set_secret("child", "key", "value")
        if sys.argv[2] == "crash":
            os._exit(0)  # dies without releasing its handle

asyncio.run(main())
"""


async def answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        return bool(await conn.fetchval("SELECT 1") == 1)
    finally:
        await conn.close()


async def run_child(data_dir: Path, mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(data_dir), mode, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, err.decode()


def handle_pids(data_dir: Path) -> str:
    return (pgdata_for(data_dir) / ".handle_pids.json").read_text()


async def crash_postgres(embedded: EmbeddedPostgres, data_dir: Path) -> None:
    """Stop the embedded server the hard way (`pg_ctl -m immediate`), as a crash would."""
    proc = await asyncio.create_subprocess_exec(
        str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata_for(data_dir)), "-w",
        "-m", "immediate", "stop", user=embedded.system_user,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, err.decode()


async def test_start_is_idempotent_and_the_last_handle_stops(data_dir: Path) -> None:
    first = EmbeddedPostgres()
    began = time.perf_counter()
    dsn = await first.start(data_dir)
    cold = time.perf_counter() - began
    assert first.first_init
    assert "/wsctl?host=" in dsn
    assert await answers(dsn)

    second = EmbeddedPostgres()
    began = time.perf_counter()
    assert await second.start(data_dir) == dsn
    warm = time.perf_counter() - began
    assert not second.first_init
    print(f"embedded start: first init {cold:.2f}s, already running {warm * 1000:.0f}ms")

    assert not await first.stop()  # another handle (in this process) still uses it
    assert await answers(dsn)
    assert await second.stop()  # the last handle stops the server
    assert not await answers(dsn)
    assert not await second.stop()  # stopping twice is harmless

    again = EmbeddedPostgres()
    began = time.perf_counter()
    assert await again.start(data_dir) == dsn
    restart = time.perf_counter() - began
    print(f"embedded start: existing data, server stopped {restart:.2f}s")
    assert not again.first_init
    assert await answers(dsn)
    assert await again.stop(keep_running=True) is False
    assert await answers(dsn)
    final = EmbeddedPostgres()
    await final.start(data_dir)
    assert await final.stop()


async def test_short_lived_process_does_not_stop_a_shared_server(data_dir: Path) -> None:
    holder = EmbeddedPostgres()
    dsn = await holder.start(data_dir)
    try:
        await run_child(data_dir, "exit")  # joins, migrates, writes, releases, exits
        assert await answers(dsn), "the child stopped the server the holder uses"
        assert str(os.getpid()) in handle_pids(data_dir)

        await run_child(data_dir, "crash")  # exits without releasing its handle
        assert await answers(dsn)
    finally:
        # The crashed child's pid is pruned as dead, so the holder is the last one.
        assert await holder.stop()
    assert not await answers(dsn)
    assert handle_pids(data_dir) == "[]"


async def test_child_that_started_the_server_stops_it_when_alone(data_dir: Path) -> None:
    await run_child(data_dir, "exit")
    assert not (pgdata_for(data_dir) / "postmaster.pid").exists()
    holder = EmbeddedPostgres()
    dsn = await holder.start(data_dir)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow("SELECT value, value_enc, key_id FROM secrets")
            assert row is not None
            assert row["value"] is None and row["key_id"]  # encrypted at rest
        finally:
            await conn.close()
        async with open_store(data_dir, None) as store:  # the child's key (file or env)
            assert await store.get_secrets() == {("child", "key"): "value"}
    finally:
        await holder.stop()


async def test_stale_pidfile_of_a_reused_pid_is_ignored(data_dir: Path) -> None:
    first = EmbeddedPostgres()
    dsn = await first.start(data_dir)
    assert await first.stop()
    # As after a reboot: postmaster.pid left behind, its pid now some other process.
    pidfile = pgdata_for(data_dir) / "postmaster.pid"
    pidfile.write_text(
        f"{os.getpid()}\n{pgdata_for(data_dir)}\n0\n5432\n{data_dir}\n\n0 0\nready\n")
    second = EmbeddedPostgres()
    assert await second.start(data_dir) == dsn
    try:
        assert await answers(dsn)
    finally:
        assert await second.stop()


async def test_database_url_is_used_as_given(data_dir: Path) -> None:
    url = "postgresql://wsctl@db.example:5432/wsctl"
    async with Database(data_dir, url) as dsn:
        assert dsn == url
    assert not (data_dir / "postgres").exists()


async def test_store_survives_a_database_restart(data_dir: Path) -> None:
    """Chaos 'database restart': the store reports unavailability, the listener
    reconnects and asks for a resync, and work continues after the restart."""
    embedded = EmbeddedPostgres()
    dsn = await embedded.start(data_dir)
    store = await Store.connect(dsn)
    try:
        keys: asyncio.Queue[WorkspaceKey] = asyncio.Queue()
        reconnected = asyncio.Event()
        await store.listen_workspace_changes(keys.put_nowait, on_reconnect=reconnected.set)

        await crash_postgres(embedded, data_dir)

        with pytest.raises(StoreUnavailableError):
            await store.list_workspaces()

        assert await embedded.restart() == dsn
        await asyncio.wait_for(reconnected.wait(), SUBPROCESS_TIMEOUT)
        ws = Workspace.model_validate({"metadata": {"name": "after-restart"}})
        await store.apply_workspace(ws)
        assert await asyncio.wait_for(keys.get(), 5) == ws.key
    finally:
        await store.close()
        await embedded.stop()


async def test_apis_answer_503_while_the_database_restarts(data_dir: Path) -> None:
    """Admin API and registry: 503 store_unavailable with Retry-After while PostgreSQL
    is down (not a 500), and 200 again once it is back."""
    embedded = EmbeddedPostgres()
    dsn = await embedded.start(data_dir)
    store = await Store.connect(dsn)
    try:
        ws = await store.apply_workspace(
            Workspace.model_validate({"metadata": {"name": "alice"}}))
        token = tokens.mint()
        await store.insert_token(ws.key.id, 1, tokens.digest(token))

        async def identity(workspace_id: str) -> tuple[set[str], set[str]]:
            return set(), {"127.0.0.1"}

        async def no_agent(workspace_id: str) -> AgentTarget | None:
            return None

        async def no_logs(workspace_id: str, tail: int) -> str | None:
            return None

        async def metrics() -> str:
            return ""

        proxy = A2AProxy(store, no_agent, timeout_seconds=5)
        admin_app = web.Application(middlewares=[json_errors, admin_auth("admin-t0ken")])
        admin_app.add_routes(AdminApi(store, proxy, no_logs, lambda: True, metrics).routes())
        registry_app = web.Application()
        registry_app.add_routes(Registry(store, identity, lambda _: None).routes())
        beat = {"workspace_id": ws.key.id, "status": "healthy"}
        async with TestClient(TestServer(admin_app, host="127.0.0.1")) as admin, \
                TestClient(TestServer(registry_app, host="127.0.0.1")) as registry:

            async def statuses() -> list[tuple[int, str | None, Any]]:
                answers = []
                async with admin.get("/api/v1/workspaces", headers={
                        "Authorization": "Bearer admin-t0ken"}) as resp:
                    answers.append((resp.status, resp.headers.get("Retry-After"),
                                    (await resp.json()).get("class")))
                async with registry.post("/registry/heartbeat", json=beat, headers={
                        "Authorization": f"Bearer {token}"}) as resp:
                    error = (await resp.json()).get("error")
                    answers.append((resp.status, resp.headers.get("Retry-After"),
                                    error.get("class") if isinstance(error, dict) else None))
                return answers

            assert [a[0] for a in await statuses()] == [200, 200]
            await crash_postgres(embedded, data_dir)

            assert await statuses() == [(503, "5", "store_unavailable")] * 2

            assert await embedded.restart() == dsn
            deadline = time.monotonic() + SUBPROCESS_TIMEOUT
            while (seen := await statuses()) != [(200, None, None)] * 2:
                # A pooled connection the server closed can fail one more request.
                assert time.monotonic() < deadline, seen
                assert all(s in (200, 503) for s, _, _ in seen), seen
                await asyncio.sleep(0.2)
        await proxy.close()
    finally:
        await store.close()
        await embedded.stop()
