"""SQL statements counted by origin (`wsctl_db_queries_total{origin}`): the benchmarks
read the resync and reconcile origins as the statements of a resync, so each entry
point must set its origin, and the adapter's counter must credit every statement to
the task that sent it. A store stand-in counts one statement per call the way asyncpg
does it (its query logger, the adapter's `_count_query`, through `loop.call_soon`);
tests/integration/test_store.py checks the same against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from controller.adapters.postgres import base
from controller.api.a2a import A2AProxy, AgentTarget
from controller.api.admin import AdminApi, admin_auth, json_errors
from controller.api.metrics import ControllerMetrics, Counts, Levels
from controller.api.registry import Registry, RegistryCounters
from controller.app.retention import RetentionTask
from controller.core import origin
from controller.core.model import Phase, Workspace, WorkspaceStatus
from controller.core.observed import ObservedContainer
from controller.core.settings import PlatformSettings, Retention
from controller.drivers.standalone import StandaloneDriver
from controller.reconcile.execute import Executor
from controller.reconcile.reconciler import Metrics, Reconciler, ReconcileResult
from tests.exposition import parse
from tests.unit.fakes import FakeEngine, FakeStore
from tests.unit.helpers import minimax

TOKEN = "admin-token-for-origin-tests"


class CountingStore:
    """A FakeStore whose every awaited call is one statement, counted as asyncpg counts
    it; `calls` notes (method, origin) in order."""

    def __init__(self, inner: FakeStore) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, origin.current()))
            result = await attr(*args, **kwargs)
            asyncio.get_running_loop().call_soon(base._count_query, None)
            return result
        return counted

    def origins(self) -> set[str]:
        return {where for _, where in self.calls}


async def counted_since(before: dict[str, int]) -> dict[str, int]:
    """Statements counted since `before`, by origin (after the logger callbacks ran)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return {k: v - before.get(k, 0) for k, v in base.QUERY_COUNT.items()
            if v != before.get(k, 0)}


def test_working_for_sets_nests_and_resets() -> None:
    assert origin.current() == origin.OTHER
    with origin.working_for(origin.API):
        assert origin.current() == "api"
        with origin.working_for(origin.METRICS):
            assert origin.current() == "metrics"
        assert origin.current() == "api"
    assert origin.current() == origin.OTHER
    with pytest.raises(ValueError, match="unknown origin 'resynk'"), \
            origin.working_for("resynk"):
        pass


async def test_each_statement_is_credited_to_the_task_that_sent_it() -> None:
    """Interleaved tasks, as on the controller's event loop: no statement is credited to
    whichever task happened to run last."""
    loop = asyncio.get_running_loop()

    async def send(where: str, statements: int) -> None:
        with origin.working_for(where):
            for _ in range(statements):
                loop.call_soon(base._count_query, None)  # what asyncpg does per statement
                await asyncio.sleep(0)

    before = dict(base.QUERY_COUNT)
    async with asyncio.TaskGroup() as group:
        group.create_task(send(origin.RESYNC, 3))
        group.create_task(send(origin.RECONCILE, 7))
        group.create_task(send(origin.REGISTRY, 5))
    assert await counted_since(before) == {"resync": 3, "reconcile": 7, "registry": 5}


class Observing(Reconciler):
    """A reconciler that writes an event and a new status (the driver is under test)."""

    async def reconcile(self, ws: Workspace, previous: WorkspaceStatus | None,
                        containers: list[ObservedContainer] | None = None) -> ReconcileResult:
        await self.executor.store.add_event(ws.key.id, "Normal", "Observed")
        return ReconcileResult(status=WorkspaceStatus(phase=Phase.PROVISIONING))


async def test_a_resync_pass_and_the_reconciles_it_queues() -> None:
    inner = FakeStore()
    for name in ("alice", "bob", "carol"):
        await inner.apply_workspace(minimax(name))
    store, engine = CountingStore(inner), FakeEngine()
    executor = Executor(engine, store, host_gateway="gw")
    reconciler = Observing(store, engine, executor, PlatformSettings(),
                           {}, clock=lambda: datetime.now(UTC))
    driver = StandaloneDriver(store, engine, reconciler, executor)  # type: ignore[arg-type]
    try:
        before = dict(base.QUERY_COUNT)
        await driver.resync()
        assert store.calls == [("list_workspaces", "resync")]
        assert await counted_since(before) == {"resync": 1}

        store.calls.clear()
        before = dict(base.QUERY_COUNT)
        while driver.queue.depth:
            key = await driver.queue.get()
            await driver.reconcile_key(key)
            driver.queue.done(key)
        assert [name for name, _ in store.calls] == [
            "get_workspace", "add_event", "write_status"] * 3
        assert store.origins() == {"reconcile"}
        assert await counted_since(before) == {"reconcile": 9}
    finally:
        driver.queue.close()


async def serve(app: web.Application,
                check: Callable[[TestClient[web.Request, web.Application]], Awaitable[None]]
                ) -> None:
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        await check(client)


async def test_admin_requests_count_as_api_and_scrapes_as_metrics() -> None:
    inner = FakeStore()
    await inner.apply_workspace(minimax("alice"))
    store = CountingStore(inner)

    async def no_address(workspace_id: str) -> AgentTarget | None:
        return None

    async def logs(workspace_id: str, tail: int) -> str | None:
        return ""

    async def render_metrics() -> str:  # as runtime.py: the gauges read the store
        await store.list_workspaces()
        return ""

    proxy = A2AProxy(store, no_address)
    api = AdminApi(store, proxy, logs, lambda: True, render_metrics)
    app = web.Application(middlewares=[json_errors, admin_auth(TOKEN)])
    app.add_routes(api.routes())
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def check(client: TestClient[web.Request, web.Application]) -> None:
        for method, path in (("GET", "/api/v1/workspaces"),
                             ("GET", "/api/v1/workspaces/alice/describe"),
                             ("POST", "/api/v1/workspaces/alice/restart")):
            async with client.request(method, path, headers=auth) as resp:
                assert resp.status == 200, await resp.text()
        assert store.origins() == {"api"}
        store.calls.clear()
        async with client.get("/metrics", headers=auth) as resp:
            assert resp.status == 200
        assert store.calls == [("list_workspaces", "metrics")]

    try:
        await serve(app, check)
    finally:
        await proxy.close()


async def test_agent_registry_requests_count_as_registry() -> None:
    store = CountingStore(FakeStore())

    async def identity(workspace_id: str) -> tuple[set[str], set[str]]:
        return set(), {"127.0.0.1"}  # the test client is the workspace's container

    registry = Registry(store, identity, lambda _: None)
    app = web.Application()
    app.add_routes(registry.routes())

    async def check(client: TestClient[web.Request, web.Application]) -> None:
        body = json.dumps({"workspace_id": "default.alice", "status": "healthy"})
        async with client.post("/registry/heartbeat", data=body) as resp:
            assert resp.status == 401  # no token: the refusal is recorded in the store
        assert store.calls and store.origins() == {"registry"}

    await serve(app, check)


async def test_a_retention_pass_counts_as_retention() -> None:
    seen: list[str] = []

    class Pruner:
        async def prune(self, policy: Retention | None = None) -> dict[str, int]:
            seen.append(origin.current())
            return {}

    await RetentionTask(Pruner(), Retention()).run_once()
    assert seen == ["retention"]


def test_metrics_export_every_origin_from_the_start() -> None:
    m = ControllerMetrics()
    m.counts = lambda: Counts.of(Metrics(), RegistryCounters(), docker_calls={},
                                 db_queries=base.QUERY_COUNT, resyncs=None)
    exported = parse(m.render(Levels())).labelled("wsctl_db_queries_total")
    assert {dict(labels)["origin"] for labels in exported} == set(origin.ORIGINS)
