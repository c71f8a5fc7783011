"""The keyed work queue, on an event loop whose clock the test moves (no sleeping)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar, TypeVarTuple

import pytest

from controller.drivers.queue import WorkQueue

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose time() only moves when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.timers: list[asyncio.TimerHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[*Ts], object], *args: *Ts,
                context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        self.timers.append(handle)
        return handle


class Clock:
    def __init__(self, loop: ManualClockLoop) -> None:
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def call(self, fn: Any, *args: Any) -> Any:
        """Call fn inside the running loop (add_after needs one)."""
        async def inside() -> Any:
            return fn(*args)
        return self.run(inside())

    def advance(self, seconds: float) -> None:
        """Move the clock and run whatever became due (timers, then what they woke)."""
        self.loop.now += seconds

        async def settle() -> None:
            for _ in range(3):
                await asyncio.sleep(0)
        self.run(settle())


@pytest.fixture
def clock() -> Iterator[Clock]:
    loop = ManualClockLoop()
    try:
        yield Clock(loop)
    finally:
        loop.close()


def drain(clock: Clock, queue: WorkQueue[str]) -> list[str]:
    """Take every queued key (without finishing them)."""
    return [clock.run(queue.get()) for _ in range(queue.depth)]


# ------------------------------------------------------------------ add / get / done


def test_add_deduplicates_queued_keys(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a", "c", "b"):
        q.add(key)
    assert q.depth == len(q) == 3
    assert drain(clock, q) == ["a", "b", "c"]
    assert q.depth == 0


def test_key_added_while_processing_is_queued_again_once_after_done(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert clock.run(q.get()) == "a"
    for _ in range(3):
        q.add("a")
    assert q.depth == 0  # never handed to a second worker while one holds it
    q.done("a")
    assert q.depth == 1
    assert clock.run(q.get()) == "a"
    q.done("a")
    assert q.depth == 0  # the dirty mark was used up


def test_done_without_new_adds_does_not_requeue(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    clock.run(q.get())
    q.done("a")
    assert q.depth == 0


def test_other_keys_are_not_blocked_by_a_processing_key(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    clock.run(q.get())
    q.add("a")
    q.add("b")
    assert clock.run(q.get()) == "b"


def test_waiting_worker_is_woken_by_add(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue()

    async def scenario() -> str:
        worker = asyncio.ensure_future(q.get())
        await asyncio.sleep(0)
        assert not worker.done()
        q.add("a")
        return await worker
    assert clock.run(scenario()) == "a"


# ------------------------------------------------------------------ add_after


def test_add_after_fires_at_its_time(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue()
    clock.call(q.add_after, "a", 5.0)
    clock.advance(4.9)
    assert q.depth == 0
    clock.advance(0.2)
    assert q.depth == 1


def test_add_after_earliest_timer_wins(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue()
    clock.call(q.add_after, "a", 10.0)
    clock.call(q.add_after, "a", 3.0)   # earlier: replaces the 10 s timer
    clock.call(q.add_after, "a", 5.0)   # later: ignored
    clock.advance(2.9)
    assert q.depth == 0
    clock.advance(0.2)
    assert drain(clock, q) == ["a"]
    q.done("a")
    clock.advance(20.0)  # neither the cancelled 10 s timer nor the 5 s one fires
    assert q.depth == 0
    assert len(clock.loop.timers) == 2 and clock.loop.timers[0].cancelled()


def test_add_after_non_positive_adds_now(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue()
    clock.call(q.add_after, "a", 0)
    clock.call(q.add_after, "b", -1)
    assert q.depth == 2


def test_timer_for_a_queued_key_does_not_duplicate_it(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    clock.call(q.add_after, "a", 1.0)
    clock.advance(2.0)
    assert q.depth == 1


# ------------------------------------------------------------------ backoff


def test_backoff_doubles_and_caps_and_schedules(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue(base_delay=0.5, max_delay=4.0)
    delays = []
    for _ in range(6):
        delays.append(clock.call(q.backoff, "a"))
        clock.advance(delays[-1] + 0.01)
        assert drain(clock, q) == ["a"]  # re-queued when its delay has passed
        q.done("a")
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert q.failures("a") == 6


def test_backoff_key_is_not_ready_before_its_delay(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue(base_delay=1.0, max_delay=60.0)
    clock.call(q.backoff, "a")
    clock.call(q.backoff, "a")  # 2 s, but the 1 s timer is earlier and wins
    clock.advance(0.9)
    assert q.depth == 0
    clock.advance(0.2)
    assert q.depth == 1


def test_forget_resets_backoff_per_key(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue(base_delay=0.5, max_delay=60.0)
    for _ in range(3):
        clock.call(q.backoff, "a")
    clock.call(q.backoff, "b")
    q.forget("a")
    assert q.failures("a") == 0
    assert q.failures("b") == 1
    assert clock.call(q.backoff, "a") == 0.5
    assert clock.call(q.backoff, "b") == 1.0


# ------------------------------------------------------------------ close


def test_close_cancels_timers_and_ignores_adds(clock: Clock) -> None:
    q: WorkQueue[str] = WorkQueue()
    clock.call(q.add_after, "a", 1.0)
    clock.call(q.backoff, "b")
    assert len(clock.loop.timers) == 2
    q.close()
    assert all(handle.cancelled() for handle in clock.loop.timers)
    clock.advance(120.0)
    assert q.depth == 0
    q.add("c")
    clock.call(q.add_after, "d", 0.1)
    clock.advance(1.0)
    assert q.depth == 0
