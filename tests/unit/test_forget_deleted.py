"""Per-workspace state in the drivers does not outlive the workspace: the standalone
driver's trigger times and back-off counts, the operator's per-workspace tables.
(The registry's heartbeat state: tests/unit/test_registry.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.core.model import Workspace, WorkspaceKey, WorkspaceStatus
from controller.core.observed import ObservedContainer
from controller.core.settings import PlatformSettings
from controller.drivers.operator import WorkspaceOperator
from controller.drivers.standalone import StandaloneDriver
from controller.reconcile.execute import Executor
from controller.reconcile.reconciler import Reconciler, ReconcileResult
from tests.unit.fakes import FakeEngine, FakeStore
from tests.unit.helpers import workspace


class Untouched(Reconciler):
    """A reconciler whose reconcile does nothing (these tests look at the drivers)."""

    async def reconcile(self, ws: Workspace, previous: WorkspaceStatus | None,
                        containers: list[ObservedContainer] | None = None) -> ReconcileResult:
        return ReconcileResult(status=previous)


def reconciler(store: FakeStore, engine: FakeEngine) -> Reconciler:
    executor = Executor(engine, store, host_gateway="gw")
    return Untouched(store, engine, executor, PlatformSettings(),  # type: ignore[arg-type]
                     {}, clock=lambda: datetime.now(UTC))


@pytest.fixture
async def driver() -> AsyncIterator[StandaloneDriver]:
    store, engine = FakeStore(), FakeEngine()
    made = StandaloneDriver(store, engine, reconciler(store, engine),  # type: ignore[arg-type]
                            reconciler(store, engine).executor, workers=1)
    yield made
    made.queue.close()


async def delete(store: FakeStore, key: WorkspaceKey) -> None:
    await store.request_delete(key.namespace, key.name)
    await store.purge_workspace(key.namespace, key.name)


async def test_standalone_driver_forgets_deleted_workspaces(driver: StandaloneDriver) -> None:
    store = driver.store
    assert isinstance(store, FakeStore)
    keys = [(await store.apply_workspace(workspace(f"w{i}"))).key for i in range(1000)]
    for key in keys:
        driver.trigger(key, "registry")
    failing = keys[0]
    driver.queue.backoff(failing)  # a reconcile of it failed once
    for key in keys[1:]:
        await delete(store, key)
        driver.trigger(key, "desired")  # the purge's NOTIFY
        await driver.reconcile_key(key)  # finds no workspace: leftovers removed
    await delete(store, failing)
    await driver.reconcile_key(failing)
    assert driver.queue.failures(failing) == 0
    assert len(driver._last_trigger) == 1000
    await driver.resync()
    assert driver._last_trigger == {}  # nothing of the 1,000 deleted workspaces is kept


async def test_a_trigger_newer_than_the_snapshot_is_kept(driver: StandaloneDriver) -> None:
    """Forgetting changes nothing: only trigger times the snapshot already covers go."""
    store = driver.store
    assert isinstance(store, FakeStore)
    key = (await store.apply_workspace(workspace("alice"))).key
    driver.trigger(key, "registry")
    await driver.resync()
    assert key not in driver._last_trigger
    assert driver._containers_for(key) == []  # the snapshot may be used ...
    driver.trigger(key, "docker:die")
    assert driver._containers_for(key) is None  # ... not after a newer trigger
    assert key in driver._last_trigger
    await driver.resync()
    assert driver._containers_for(key) == []


def body(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace",
            "metadata": {"name": name, "namespace": "default", "uid": uid,
                         "deletionTimestamp": "2030-01-01T00:00:00Z"},
            "spec": {}}


async def test_operator_forgets_a_deleted_workspace() -> None:
    store, engine = FakeStore(), FakeEngine()
    operator = WorkspaceOperator(reconciler(store, engine), engine)  # type: ignore[arg-type]
    alice, bob = WorkspaceKey("default", "alice"), WorkspaceKey("default", "bob")
    for key, uid in ((alice, "u-a"), (bob, "u-b")):
        operator._lock(key)
        operator._wakeup(key)
        operator._due[key] = 1.0
        operator._failures[key] = 1
        operator._secret_users[key] = frozenset({"llm"})
        operator._statuses[uid] = WorkspaceStatus()
    await operator._deleted(body=body("alice", "u-a"))
    tables = (operator._locks, operator._wakeups, operator._due, operator._failures,
              operator._secret_users)
    assert [set(table) for table in tables] == [{bob}] * len(tables)
    assert set(operator._statuses) == {"u-b"}
