"""A real `wsctl run` prunes history in the background (a short --retention-interval
here): events and diagnostics beyond the --retain-* limits go, a line says so, and
the task stops with the controller. No workspace or container is needed."""

from __future__ import annotations

import asyncio
import os
import signal

import asyncpg
import pytest

from controller.adapters.database import open_store
from controller.testing.harness import FAST_FLAGS, ControllerProcess, new_dir, remove_dir, wait_for
from tests.e2e.conftest import INSTANCE, NETWORK

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

GONE = "default.gone"  # a deleted workspace: its history stays, within the limits
KEPT = "default.kept"


def test_running_controller_prunes_history_in_the_background(gateway: str) -> None:
    data_dir = new_dir("wsctl-e2e-retention-")
    proc = ControllerProcess(
        data_dir=data_dir, network=NETWORK, instance=f"{INSTANCE}-retention", gateway=gateway,
        env={}, flags=(*FAST_FLAGS, "--retention-interval", "0.5", "--retain-events", "5",
                       "--retain-diagnostics", "2"))
    database_url = os.environ.get("DATABASE_URL")

    async def add_history() -> None:
        async with open_store(data_dir, database_url, keep_running=True) as store:
            for i in range(50):
                await store.add_event(GONE, "Normal", "Tick", f"event {i}")
            for i in range(4):
                await store.add_diagnostics(GONE, container_id=f"c{i}", reason="ContainerExited")
            for i in range(3):
                await store.add_event(KEPT, "Normal", "Tick", f"event {i}")

    async def counts() -> tuple[int, int, int]:
        """Events of GONE and KEPT, diagnostics of GONE."""
        async with open_store(data_dir, database_url, keep_running=True) as store:
            conn = await asyncpg.connect(store.dsn)
            try:
                return (
                    int(await conn.fetchval(
                        "SELECT count(*) FROM events WHERE workspace_id = $1", GONE)),
                    int(await conn.fetchval(
                        "SELECT count(*) FROM events WHERE workspace_id = $1", KEPT)),
                    int(await conn.fetchval(
                        "SELECT count(*) FROM diagnostics WHERE workspace_id = $1", GONE)))
            finally:
                await conn.close()

    try:
        proc.start()
        asyncio.run(add_history())
        wait_for(lambda: asyncio.run(counts()) == (5, 3, 2), 30, "events and diagnostics pruned")
        wait_for(lambda: "wsctl.retention: retention: pruned" in proc.log(), 10, "the log line")
        assert proc.proc is not None
        proc.stop(signal.SIGTERM)
        assert proc.proc.returncode == 0, proc.log()
        assert "retention pass failed" not in proc.log()
    finally:
        proc.stop(signal.SIGKILL)
        remove_dir(data_dir)
