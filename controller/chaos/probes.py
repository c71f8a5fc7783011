"""Continuous probes: sample the fleet all run long, as a user of the API would see it.

Every `interval` seconds one list call to the admin API and one label-filtered
Docker list; every `events_every` seconds the events of each workspace (from
`describe`). From these it keeps the latest view (for convergence waits), the
phase timeline, every Degraded seen, and the continuous invariants: never two
running containers for one workspace, never phase Failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from controller.chaos.api import AdminClient, ApiError
from controller.chaos.checks import (
    active,
    condition,
    convergence_problems,
    degraded_reason,
    fault_names,
    phase,
)
from controller.chaos.model import (
    NO_FAILED,
    SINGLE_RUNNER,
    DegradedSeen,
    FaultRecord,
    PhaseChange,
    RunClock,
    Violation,
)
from controller.chaos.ports import ChaosEngine, ContainerLike
from controller.core.conditions import DegradedReason

log = logging.getLogger("wsctl.chaos")

DELETED = "Deleted"
"""The timeline's phase for a workspace the list no longer has (a delete-reapply)."""


class Observer:
    def __init__(self, api: AdminClient, engine: ChaosEngine,
                 run_blocking: Callable[..., Awaitable[Any]], clock: RunClock,
                 names: Sequence[str], namespace: str, *, interval: float = 0.25,
                 events_every: float = 2.0) -> None:
        self.api = api
        self.engine = engine
        self.run_blocking = run_blocking
        self.clock = clock
        self.names = list(names)
        self.namespace = namespace
        self.interval = interval
        self.events_every = events_every
        self.records: list[FaultRecord] = []
        """The runner's fault records, to name the fault in effect in a violation."""
        self.latest: dict[str, dict[str, Any]] = {}
        self.containers: list[ContainerLike] = []
        self.expected_hash: dict[str, str] = {}
        self.phases: list[PhaseChange] = []
        self.degraded: list[DegradedSeen] = []
        self.events: dict[int, dict[str, Any]] = {}
        self.violations: list[Violation] = []
        self.samples = 0
        self.api_answers = True
        """Whether the last sample's workspace list came back."""
        self.trailing_list = 0
        """Samples where the list showed two runners but inspect found one already dead."""
        self._reported: set[tuple[str, ...]] = set()
        self._changed = asyncio.Condition()

    def workspace_id(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    def mine(self, name: str) -> list[ContainerLike]:
        wanted = self.workspace_id(name)
        return [c for c in self.containers if c.workspace_id == wanted]

    # ------------------------------------------------------------ sampling

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self._loop(stop, self.sample, self.interval),
                             self._loop(stop, self.collect_events, self.events_every))

    @staticmethod
    async def _loop(stop: asyncio.Event, step: Callable[[], Awaitable[None]],
                    every: float) -> None:
        while not stop.is_set():
            try:
                await step()
            except Exception as exc:  # a probe must outlive a bad sample
                log.debug("%s failed: %s", step.__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)  # the sampling period

    async def sample(self) -> None:
        try:
            items = await self.api.workspaces()
        except ApiError:
            items = None  # controller down (a fault): keep the last view
        self.api_answers = items is not None
        containers = await self.run_blocking(self.engine.containers)
        now = self.clock.now()
        self.containers = containers
        if items is not None:
            by_name = {i["metadata"]["name"]: i for i in items}
            for name in self.names:
                if name in by_name:
                    self._observe(name, by_name[name], now)
                elif self.latest.pop(name, None) is not None:  # deleted (delete-reapply)
                    self.phases.append(PhaseChange(now, name, DELETED, ""))
        await self._check_runners(now)
        self.samples += 1
        async with self._changed:
            self._changed.notify_all()

    def _observe(self, name: str, obj: dict[str, Any], now: float) -> None:
        previous = self.latest.get(name)
        self.latest[name] = obj
        current = (phase(obj), degraded_reason(obj))
        before = (phase(previous), degraded_reason(previous)) if previous else None
        if current != before:
            self.phases.append(PhaseChange(now, name, *current))
            if current[1]:
                message = str(condition(obj, "Degraded").get("message", ""))
                self.degraded.append(DegradedSeen(now, name, current[1], message, "status"))
        if current[0] == "Failed":
            self._violate(NO_FAILED, name, now,
                          f"phase Failed ({condition(obj, 'Degraded').get('message', '')})")

    async def _check_runners(self, now: float) -> None:
        for name in self.names:
            running = [c for c in self.mine(name) if c.running]
            if len(running) < 2:
                continue
            # The list may trail reality (a container that just died): ask each one.
            alive = set(await self.run_blocking(self.engine.running_now,
                                                [c.id for c in running]))
            confirmed = [c for c in running if c.id in alive]
            if len(confirmed) < len(running):
                self.trailing_list += 1
            if len(confirmed) > 1:
                self._violate(SINGLE_RUNNER, name, now, "two running containers: " + ", ".join(
                    f"{c.name} ({c.state})" for c in confirmed))

    def _violate(self, invariant: str, name: str, now: float, detail: str) -> None:
        faults = fault_names(active(self.records, name, now, now))
        key = (invariant, name, faults)
        if key in self._reported:
            return  # once per workspace and fault window
        self._reported.add(key)
        self.violations.append(Violation(invariant, name, faults, detail, now))

    async def collect_events(self) -> None:
        for name in self.names:
            try:
                described = await self.api.describe(name)
            except ApiError:
                return
            for event in described.get("events") or []:
                if isinstance(event, dict) and isinstance(event.get("id"), int):
                    self.events[event["id"]] = {**event, "workspace": name}

    def event_degraded(self) -> list[DegradedSeen]:
        """Warning events of a Degraded reason: the controller records one per Degraded
        transition (other Warning events, such as EgressRefused, report no condition;
        the status samples see every Degraded reason, known or not)."""
        seen = []
        reasons = {r.value for r in DegradedReason}
        for event in self.events.values():
            if event.get("type") != "Warning" or event.get("reason") not in reasons:
                continue
            times = {event.get("first_at"), event.get("at")} - {None}
            for when in times:
                seen.append(DegradedSeen(self.clock.of(str(when)), event["workspace"],
                                         str(event.get("reason")), str(event.get("message")),
                                         "event"))
        return seen

    # ------------------------------------------------------------ waiting

    async def wait(self, predicate: Callable[[], bool], seconds: float) -> bool:
        """Wait until `predicate()` holds after a sample; False on timeout."""
        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)
        try:
            await asyncio.wait_for(until(), seconds)
        except TimeoutError:
            return False
        return True

    def problems(self, name: str) -> list[str]:
        # Nothing has converged while the controller does not answer: the last
        # view it gave may be long out of date.
        down = [] if self.api_answers else ["the controller's API does not answer"]
        return down + convergence_problems(self.latest.get(name), self.mine(name),
                                           self.expected_hash.get(name))

    def converged(self, name: str) -> bool:
        return not self.problems(name)

    def reason_now(self, name: str) -> str:
        obj = self.latest.get(name)
        return degraded_reason(obj) if obj else ""

    async def wait_reason(self, name: str, reason: str, seconds: float) -> bool:
        start = len(self.degraded)
        return await self.wait(
            lambda: self.reason_now(name) == reason or any(
                d.workspace == name and d.reason == reason for d in self.degraded[start:]),
            seconds)
