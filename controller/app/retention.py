"""The retention task of both controllers: a pruning pass every few minutes.

`RetentionTask` runs `Store.prune(policy)` in a background task of its own,
never in a reconcile: the first pass soon after start, then every `interval`
seconds. A pass that deleted something logs one line; a pass that failed (the
database away, a statement refused) logs a warning and the next interval tries
again, so retention never takes the controller down. `stop()` ends it with the
controller. An interval of 0 turns retention off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

from controller.core import origin
from controller.core import settings as defaults
from controller.core.settings import Retention

log = logging.getLogger("wsctl.retention")


class Pruner(Protocol):
    def prune(self, policy: Retention | None = None) -> Awaitable[dict[str, int]]: ...


@dataclass
class RetentionStats:
    passes: int = 0
    failures: int = 0
    pruned: dict[str, int] = field(default_factory=dict)
    """Rows deleted per table since start."""


class RetentionTask:
    def __init__(self, store: Pruner, policy: Retention, *,
                 interval: float = defaults.RETENTION_INTERVAL_SECONDS,
                 first_delay: float = defaults.RETENTION_FIRST_DELAY_SECONDS) -> None:
        self.store = store
        self.policy = policy
        self.interval = interval
        self.first_delay = min(first_delay, interval)
        self.stats = RetentionStats()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task (not when the interval is 0)."""
        if self._task is None and self.interval > 0:
            self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # a cancel of stop() itself still propagates

    async def run_once(self) -> dict[str, int] | None:
        """One pass: the rows deleted per table, or None when it failed (logged)."""
        started = time.monotonic()
        try:
            with origin.working_for(origin.RETENTION):
                pruned = await self.store.prune(self.policy)
        except Exception as exc:
            self.stats.failures += 1
            log.warning("retention pass failed (%s: %s); next try in %.0fs",
                        type(exc).__name__, exc, self.interval)
            return None
        self.stats.passes += 1
        for table, n in pruned.items():
            self.stats.pruned[table] = self.stats.pruned.get(table, 0) + n
        if any(pruned.values()):
            log.info("retention: pruned %s in %.2fs",
                     ", ".join(f"{n} {table}" for table, n in pruned.items() if n),
                     time.monotonic() - started)
        return pruned

    async def _loop(self) -> None:
        await asyncio.sleep(self.first_delay)
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval)
