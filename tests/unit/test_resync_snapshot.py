"""The resync's one list call stands in for a workspace's own only while nothing has
happened to that workspace since the call began.

Found by a full chaos run: a resync listed the fleet between a suspension's removal
of the old container and its creation of the standby; the wake that followed started
the standby (no trigger: wsctl's own act), and the next pass, handed that snapshot,
saw no container and created a second one: two running containers for a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from controller.core.model import Workspace, WorkspaceKey, WorkspaceStatus
from controller.core.observed import ObservedContainer
from controller.core.settings import PlatformSettings
from controller.drivers.standalone import StandaloneDriver
from controller.reconcile.execute import Executor
from controller.reconcile.reconciler import Reconciler, ReconcileResult
from tests.unit.fakes import FakeEngine, FakeStore
from tests.unit.helpers import workspace


class Recording(Reconciler):
    """Records the container list each pass is handed; may be held inside a pass."""

    handed: list[list[ObservedContainer] | None]
    hold: asyncio.Event | None = None
    entered: asyncio.Event | None = None

    async def reconcile(self, ws: Workspace, previous: WorkspaceStatus | None,
                        containers: list[ObservedContainer] | None = None) -> ReconcileResult:
        self.handed.append(containers)
        if self.hold is not None and self.entered is not None:
            self.entered.set()
            await self.hold.wait()
        return ReconcileResult(status=previous)


@pytest.fixture
async def driver() -> AsyncIterator[StandaloneDriver]:
    store, engine = FakeStore(), FakeEngine()
    recording = Recording(store, engine,  # type: ignore[arg-type]
                          Executor(engine, store, host_gateway="gw"),
                          PlatformSettings(), {}, clock=lambda: datetime.now(UTC))
    recording.handed = []
    made = StandaloneDriver(store, engine, recording, recording.executor,  # type: ignore[arg-type]
                            workers=1)
    yield made
    made.queue.close()


def handed(driver: StandaloneDriver) -> list[list[ObservedContainer] | None]:
    assert isinstance(driver.reconciler, Recording)
    return driver.reconciler.handed


async def key_of(driver: StandaloneDriver, name: str) -> WorkspaceKey:
    assert isinstance(driver.store, FakeStore)
    return (await driver.store.apply_workspace(workspace(name))).key


async def test_a_pass_that_ends_after_the_list_call_makes_the_snapshot_too_old(
        driver: StandaloneDriver) -> None:
    key = await key_of(driver, "alice")
    recording = driver.reconciler
    assert isinstance(recording, Recording)
    recording.hold, recording.entered = asyncio.Event(), asyncio.Event()
    busy = asyncio.create_task(driver.reconcile_key(key))  # a pass acting on alice...
    await recording.entered.wait()
    await driver.resync()  # ... while the fleet is listed
    recording.hold.set()
    await busy
    recording.hold = recording.entered = None
    await driver.reconcile_key(key)
    assert handed(driver) == [None, None]  # the second pass looks for itself


async def test_a_trigger_during_the_list_call_makes_the_snapshot_too_old(
        driver: StandaloneDriver) -> None:
    key, other = await key_of(driver, "alice"), await key_of(driver, "bob")
    engine = driver.engine
    assert isinstance(engine, FakeEngine)
    real = engine.list_containers

    async def listing(workspace_id: str | None = None) -> list[ObservedContainer]:
        found = await real(workspace_id)
        if workspace_id is None:
            driver.trigger(key, "docker:destroy")  # arrives while Docker lists
        return found

    engine.list_containers = listing  # type: ignore[method-assign]
    await driver.resync()
    assert driver._containers_for(key) is None
    assert driver._containers_for(other) == []  # untouched: the snapshot serves it
