"""SQL statements by origin against a real PostgreSQL: asyncpg's query logger (the
adapter's counter) credits each statement to the task that sent it, also when tasks of
different origins share the pool at the same time. The benchmarks' "SQL statements per
resync" is read from these counts (tests/unit/test_query_origin.py: the entry points)."""

from __future__ import annotations

import asyncio

import pytest

from controller.adapters.postgres import QUERY_COUNT, Store
from controller.core import origin
from controller.core.model import Workspace

pytestmark = pytest.mark.postgres


def make_workspace(name: str) -> Workspace:
    return Workspace.model_validate({"apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace",
                                     "metadata": {"name": name}, "spec": {}})


async def counted() -> dict[str, int]:
    """A copy of the counts once the logger callbacks queued so far have run."""
    for _ in range(3):
        await asyncio.sleep(0)
    return dict(QUERY_COUNT)


def since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


async def test_statements_are_credited_to_the_origin_of_the_task_that_sent_them(
        store: Store) -> None:
    for name in ("alice", "bob"):
        await store.apply_workspace(make_workspace(name))

    # What one call costs, alone.
    before = await counted()
    with origin.working_for(origin.RESYNC):
        await store.list_workspaces()
    per_list = since(before, await counted())
    before = await counted()
    with origin.working_for(origin.RECONCILE):
        await store.get_workspace("default", "alice")
    per_get = since(before, await counted())
    assert set(per_list) == {"resync"} and set(per_get) == {"reconcile"}

    # The same calls interleaved on one pool, with an API write among them.
    async def resync() -> None:
        with origin.working_for(origin.RESYNC):
            for _ in range(20):
                await store.list_workspaces()

    async def reconcile() -> None:
        with origin.working_for(origin.RECONCILE):
            for _ in range(20):
                await store.get_workspace("default", "bob")

    async def api() -> None:
        with origin.working_for(origin.API):
            await store.apply_workspace(make_workspace("carol"))

    before = await counted()
    await asyncio.gather(resync(), reconcile(), api(), reconcile())
    got = since(before, await counted())
    assert got.pop("resync") == 20 * per_list["resync"]
    assert got.pop("reconcile") == 40 * per_get["reconcile"]
    assert got.pop("api") > 0
    assert got == {}  # nothing credited elsewhere (e.g. to "other")
