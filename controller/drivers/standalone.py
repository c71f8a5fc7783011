"""The standalone driver: decides *when* to reconcile which workspace.

Feeds a keyed work queue from desired-state changes (PostgreSQL LISTEN/NOTIFY),
Docker events of managed containers, registry events (register, failure,
heartbeat) and a periodic resync that lists the whole fleet with one call.
Workers take keys one at a time; failed keys back off exponentially.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from controller.core import origin
from controller.core import settings as defaults
from controller.core.model import WorkspaceKey
from controller.core.observed import ObservedContainer
from controller.drivers.orphans import remove_orphans
from controller.drivers.queue import WorkQueue
from controller.drivers.triggers import EventTriggers, TriggerStats
from controller.reconcile.execute import Executor
from controller.reconcile.ports import DriverEngine, DriverStore
from controller.reconcile.reconciler import Reconciler

log = logging.getLogger("wsctl.driver")

@dataclass
class Snapshot:
    """The fleet as seen by the last resync's single list call."""

    taken_at: float
    """When the list call began (monotonic)."""
    containers: list[ObservedContainer]


@dataclass
class DriverStats(TriggerStats):
    resyncs: int = 0



@dataclass
class _PassWaiter:
    passes: int
    """Reconcile passes of the key still to finish."""
    done: asyncio.Future[None]

class StandaloneDriver(EventTriggers):
    def __init__(self, store: DriverStore, engine: DriverEngine, reconciler: Reconciler,
                 executor: Executor, *, workers: int = defaults.WORKERS,
                 resync_seconds: float = defaults.RESYNC_SECONDS,
                 on_status: Callable[[WorkspaceKey], None] | None = None) -> None:
        self.store = store
        self.on_status = on_status
        """Told after a status is written (the admin API's watches look again)."""
        self.engine = engine
        self.reconciler = reconciler
        self.executor = executor
        self.queue: WorkQueue[WorkspaceKey] = WorkQueue()
        self.workers = workers
        self.resync_seconds = resync_seconds
        self.stats = DriverStats()
        self._snapshot: Snapshot | None = None
        self._last_trigger: dict[WorkspaceKey, float] = {}
        self._waiters: dict[WorkspaceKey, list[_PassWaiter]] = {}
        """Callers of `reconciled` (a wake), until their pass is done: then removed."""
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_events = threading.Event()
        self._listener: object | None = None
        self.synced = asyncio.Event()

    # ------------------------------------------------------------ triggers

    def trigger(self, key: WorkspaceKey, source: str) -> None:
        self._last_trigger[key] = time.monotonic()
        self.stats.count(source)
        self.queue.add(key)

    async def reconciled(self, workspace_id: str) -> None:
        """Trigger a reconcile and return when one that began after this call is done
        (a wake must not judge a status written before the suspension was cleared).
        A pass in progress began before: then it is the pass after it."""
        key = WorkspaceKey.from_id(workspace_id)
        waiter = _PassWaiter(2 if self.queue.processing(key) else 1,
                             asyncio.get_running_loop().create_future())
        self._waiters.setdefault(key, []).append(waiter)
        self.trigger(key, "wake")
        try:
            await waiter.done
        finally:
            left = [w for w in self._waiters.get(key, []) if w is not waiter]
            if left:
                self._waiters[key] = left
            else:
                self._waiters.pop(key, None)

    def _pass_done(self, key: WorkspaceKey) -> None:
        for waiter in self._waiters.get(key, []):
            waiter.passes -= 1
            if waiter.passes <= 0 and not waiter.done.done():
                waiter.done.set_result(None)

    def _on_desired_change(self, key: WorkspaceKey) -> None:
        self.trigger(key, "desired")

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._listener = await self.store.listen_workspace_changes(
            self._on_desired_change, on_reconnect=self._on_store_reconnect)
        self.engine.watch_events(loop, self._on_docker_event, self._stop_events,
                                 on_reconnect=self._on_engine_reconnect)
        await self.resync()
        self._tasks = [asyncio.create_task(self._worker(i), name=f"reconcile-{i}")
                       for i in range(self.workers)]
        self._tasks.append(asyncio.create_task(self._resync_loop(), name="resync"))

    async def stop(self) -> None:
        self._stop_events.set()
        self.queue.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _on_engine_reconnect(self) -> None:
        # The events of the gap were never delivered: every container may have died
        # with the engine. Look at the whole fleet now, not at the next resync.
        log.info("Docker engine answers again; resyncing every workspace")
        asyncio.get_running_loop().create_task(self.resync())

    def _on_store_reconnect(self) -> None:
        log.info("database connection restored; resyncing every workspace")
        asyncio.get_running_loop().create_task(self.resync())

    # ------------------------------------------------------------ resync

    async def resync(self) -> None:
        """One list call for the fleet; adopt, clean up orphans, queue every workspace.
        Its statements are counted under the `resync` origin, the reconciles it queues
        under `reconcile`."""
        with origin.working_for(origin.RESYNC):
            await self._resync()

    async def _resync(self) -> None:
        # Stamped before the list call: a trigger while Docker lists (an event the list
        # may or may not reflect) makes the snapshot too old for that workspace.
        started = time.monotonic()
        containers = await self.engine.list_containers()
        workspaces = await self.store.list_workspaces()
        self._snapshot = snap = Snapshot(started, containers)
        # A trigger older than the snapshot counts as none (`_containers_for`): forget
        # those, so the map holds only keys touched since, not deleted workspaces.
        self._last_trigger = {k: t for k, t in self._last_trigger.items() if t > snap.taken_at}
        known = {ws.key.id for ws in workspaces}
        await remove_orphans(self.engine, containers, known, self.reconciler.settings)
        for ws in workspaces:
            self.stats.count("resync")
            self.queue.add(ws.key)
        self.stats.resyncs += 1
        self.synced.set()

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            try:
                await self.resync()
            except Exception as exc:
                log.warning("resync failed: %s", exc)

    def _containers_for(self, key: WorkspaceKey) -> list[ObservedContainer] | None:
        """The resync snapshot, if nothing happened to this key since it was taken."""
        snap = self._snapshot
        if snap is None or self._last_trigger.get(key, 0.0) > snap.taken_at:
            return None
        return [c for c in snap.containers if c.workspace_id == key.id]

    # ------------------------------------------------------------ workers

    async def _worker(self, index: int) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.reconcile_key(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.queue.backoff(key)
                log.warning("%s: reconcile failed (%s: %s); retry in %.1fs", key,
                            type(exc).__name__, exc, delay)
            finally:
                self.queue.done(key)
                self._pass_done(key)

    async def reconcile_key(self, key: WorkspaceKey) -> None:
        with origin.working_for(origin.RECONCILE):
            await self._reconcile_key(key)

    async def _reconcile_key(self, key: WorkspaceKey) -> None:
        self.stats.reconciles += 1
        ws = await self.store.get_workspace(key.namespace, key.name)
        containers = self._containers_for(key)
        try:
            if ws is None:  # purged (or never existed): forget its failures too
                await self._remove_leftovers(key, containers)
                self.queue.forget(key)
                return
            result = await self.reconciler.reconcile(ws, ws.status, containers)
        finally:
            # A snapshot serves one pass at most, and what this pass did (a container
            # created, started, removed: no trigger of its own) is not in any snapshot
            # taken before it ended.
            self._last_trigger[key] = time.monotonic()
        if result.status is not None and result.status != ws.status:
            await self.store.write_status(key.namespace, key.name, result.status)
            if self.on_status is not None:
                self.on_status(key)
        if result.error is not None:
            delay = self.queue.backoff(key)
            log.info("%s: retrying in %.1fs", key, delay)
            return
        self.queue.forget(key)
        if result.requeue_after is not None:
            self.queue.add_after(key, result.requeue_after)

    async def _remove_leftovers(self, key: WorkspaceKey,
                                containers: list[ObservedContainer] | None) -> None:
        if containers is None:
            containers = await self.engine.list_containers(key.id)
        for c in containers:
            if c.workspace_id == key.id:
                log.info("%s: removing container %s of a deleted workspace", key, c.id[:12])
                await self.engine.remove(c.id)
