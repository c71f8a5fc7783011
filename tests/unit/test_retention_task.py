"""The retention task of both controllers: passes on a timer, a line when something was
pruned, failures logged and retried, stopped with the controller."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from controller.app.retention import RetentionTask
from controller.core.errors import StoreUnavailableError
from controller.core.settings import Retention

NOTHING = {"tokens": 0, "activity": 0, "events": 0, "diagnostics": 0}


class FakePruner:
    """Answers passes from a script (a count dict or an exception), then nothing pruned."""

    def __init__(self, *script: dict[str, int] | Exception) -> None:
        self.script = list(script)
        self.policies: list[Retention | None] = []
        self.passes = asyncio.Event()

    async def prune(self, policy: Retention | None = None) -> dict[str, int]:
        self.policies.append(policy)
        self.passes.set()
        step = self.script.pop(0) if self.script else NOTHING
        if isinstance(step, Exception):
            raise step
        return dict(step)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(400):  # 2 s
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met within 2 s")


async def test_passes_run_on_a_timer_and_log_what_they_pruned(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "wsctl.retention")
    pruner = FakePruner({**NOTHING, "tokens": 991, "events": 4000})
    policy = Retention(events=10)
    task = RetentionTask(pruner, policy, interval=0.05, first_delay=0.01)
    task.start()
    try:
        await until(lambda: len(pruner.policies) >= 3)
    finally:
        await asyncio.wait_for(task.stop(), 2)
    assert pruner.policies[:3] == [policy] * 3
    lines = [r.getMessage() for r in caplog.records if r.name == "wsctl.retention"]
    assert len(lines) == 1  # only the pass that pruned something says so
    assert lines[0].startswith("retention: pruned 991 tokens, 4000 events in ")
    assert task.stats.pruned["tokens"] == 991 and task.stats.passes >= 3


async def test_a_failed_pass_is_logged_and_the_next_one_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "wsctl.retention")
    pruner = FakePruner(StoreUnavailableError("database unavailable"), RuntimeError("boom"),
                        {**NOTHING, "activity": 5})
    task = RetentionTask(pruner, Retention(), interval=0.02, first_delay=0)
    task.start()
    try:
        await until(lambda: task.stats.pruned.get("activity") == 5)
        assert task._task is not None and not task._task.done()  # still running
    finally:
        await asyncio.wait_for(task.stop(), 2)
    assert task.stats.failures == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0].startswith("retention pass failed (StoreUnavailableError: database")
    assert "RuntimeError: boom" in warnings[1]


async def test_the_first_pass_comes_soon_and_stop_ends_the_task() -> None:
    pruner = FakePruner()
    task = RetentionTask(pruner, Retention(), interval=3600, first_delay=0.01)
    task.start()
    await asyncio.wait_for(pruner.passes.wait(), 2)
    running = task._task
    await asyncio.wait_for(task.stop(), 2)
    assert running is not None and running.cancelled()
    assert len(pruner.policies) == 1
    await task.stop()  # idempotent


async def test_interval_zero_turns_retention_off() -> None:
    pruner = FakePruner()
    task = RetentionTask(pruner, Retention(), interval=0)
    task.start()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(task.stop(), 2)
    assert pruner.policies == []
