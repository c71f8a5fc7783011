"""StandaloneDriver.reconciled: the wake waits for a reconcile that began after it asked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from controller.core.model import Workspace, WorkspaceStatus
from controller.core.observed import ObservedContainer
from controller.core.settings import PlatformSettings
from controller.drivers.standalone import StandaloneDriver
from controller.reconcile.execute import Executor
from controller.reconcile.reconciler import Reconciler, ReconcileResult
from tests.unit.fakes import FakeEngine, FakeStore
from tests.unit.helpers import workspace


class Gated(Reconciler):
    """Each reconcile records that it began, then waits for the test to let it finish."""

    began: list[int]
    started: asyncio.Queue[int]
    gate: asyncio.Event

    async def reconcile(self, ws: Workspace, previous: WorkspaceStatus | None,
                        containers: list[ObservedContainer] | None = None) -> ReconcileResult:
        self.began.append(len(self.began) + 1)
        self.started.put_nowait(self.began[-1])
        await self.gate.wait()
        self.gate.clear()
        return ReconcileResult(status=previous)


async def test_a_pass_in_progress_does_not_count_the_next_one_does() -> None:
    store, engine = FakeStore(), FakeEngine()
    executor = Executor(engine, store, host_gateway="gw")
    gated = Gated(store, engine, executor, PlatformSettings(),  # type: ignore[arg-type]
                  {}, clock=lambda: datetime.now(UTC))
    gated.began, gated.started, gated.gate = [], asyncio.Queue(), asyncio.Event()
    driver = StandaloneDriver(store, engine, gated, executor, workers=1)  # type: ignore[arg-type]
    key = (await store.apply_workspace(workspace("alice"))).key
    worker = asyncio.create_task(driver._worker(0))
    try:
        driver.trigger(key, "registry")
        # pass 1 is in progress (it read the old state)
        assert await asyncio.wait_for(gated.started.get(), 5) == 1
        waiting = asyncio.create_task(driver.reconciled(key.id))
        await asyncio.sleep(0.05)
        gated.gate.set()  # pass 1 ends: not enough
        assert await asyncio.wait_for(gated.started.get(), 5) == 2
        assert not waiting.done()
        gated.gate.set()  # pass 2 began after the call: now it is done
        await asyncio.wait_for(waiting, 5)
        assert gated.began == [1, 2] and driver._waiters == {}  # nothing kept
        # Idle key: the next pass is the one.
        idle = asyncio.create_task(driver.reconciled(key.id))
        assert await asyncio.wait_for(gated.started.get(), 5) == 3
        gated.gate.set()
        await asyncio.wait_for(idle, 5)
    finally:
        worker.cancel()
        driver.queue.close()
