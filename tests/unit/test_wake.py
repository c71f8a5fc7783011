"""Wake-on-request (api/wake.py) and the in-flight tracker (core/activity.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from controller.api.wake import WakeError, Waker
from controller.core.activity import RecentActivity
from controller.core.model import Phase, Workspace, WorkspaceStatus
from tests.unit.fakes import FakeStore
from tests.unit.helpers import minimax


def suspended_workspace(store: FakeStore, startup: int = 60) -> Workspace:
    ws = minimax(startupTimeoutSeconds=startup).model_copy(update={
        "status": WorkspaceStatus(phase=Phase.SUSPENDED, token_generation=3)})
    store.workspaces[("default", "alice")] = ws
    store.suspensions[ws.key.id] = "idle"
    return ws


async def test_concurrent_requests_share_one_wake_and_wait_until_online() -> None:
    store = FakeStore()
    ws = suspended_workspace(store)
    passes: list[str] = []
    woke: list[float] = []

    async def reconciled(workspace_id: str) -> None:  # the wake plan: starting, then Online
        passes.append(workspace_id)
        await store.write_status("default", "alice", WorkspaceStatus(
            phase=Phase.PROVISIONING, token_generation=4))

        async def come_back() -> None:
            await asyncio.sleep(0.2)
            await store.write_status("default", "alice", WorkspaceStatus(
                phase=Phase.ONLINE, token_generation=4))
        asyncio.get_running_loop().create_task(come_back())

    waker = Waker(store, lambda _: None, reconciled, observe=woke.append)
    results = await asyncio.gather(*(waker.ensure_awake(ws) for _ in range(5)))
    assert results == [True] * 5
    assert passes == [ws.key.id]  # one wake for five callers
    assert [c for c in store.calls if c[0] == "store.resume"] == [("store.resume", ws.key.id)]
    assert ws.key.id not in store.suspensions
    assert len(woke) == 1 and 0.15 < woke[0] < 5
    assert len(waker) == 0  # nothing kept once the wake is over
    # Not suspended (any more): one statement, no reconcile, straight through.
    assert await waker.ensure_awake(ws) is False and passes == [ws.key.id]


async def test_a_suspension_cleared_before_it_was_acted_on_answers_at_once() -> None:
    """Suspend, then a message at once: the suspension is cleared before any reconcile
    saw it, so the workspace never leaves Online (no new generation will come)."""
    store = FakeStore()
    ws = minimax().model_copy(update={"status": WorkspaceStatus(phase=Phase.ONLINE,
                                                                 token_generation=3)})
    store.workspaces[("default", "alice")] = ws
    store.suspensions[ws.key.id] = "suspended by request"

    async def reconciled(workspace_id: str) -> None:
        pass  # the pass finds nothing to do: still Online on generation 3

    started = asyncio.get_running_loop().time()
    assert await Waker(store, lambda _: None, reconciled).ensure_awake(ws) is True
    assert asyncio.get_running_loop().time() - started < 1


async def test_a_wake_that_does_not_come_back_is_a_504(monkeypatch: pytest.MonkeyPatch) -> None:
    store = FakeStore()
    ws = suspended_workspace(store, startup=1)
    monkeypatch.setattr("controller.api.wake.WAKE_MARGIN_SECONDS", 0.1)

    async def reconciled(workspace_id: str) -> None:
        await store.write_status("default", "alice", WorkspaceStatus(
            phase=Phase.PROVISIONING, token_generation=4))  # and never Online
    with pytest.raises(WakeError) as caught:
        await Waker(store, lambda _: None, reconciled).ensure_awake(ws)
    assert caught.value.status == 504 and caught.value.cls == "wake_timeout"


def test_a_request_in_flight_counts_as_activity_now_and_the_map_is_bounded() -> None:
    t = [datetime(2026, 1, 1, tzinfo=UTC)]
    recent = RecentActivity(clock=lambda: t[0], limit=3)
    assert recent.last("a") is None
    with recent.request("a"):
        t[0] += timedelta(seconds=100)
        assert recent.last("a") == t[0]  # in flight: active now
    t[0] += timedelta(seconds=50)
    assert recent.last("a") == t[0] - timedelta(seconds=50)  # when it ended
    for name in ("b", "c", "d"):
        with recent.request(name):
            pass
    assert len(recent) == 3 and recent.last("a") is None  # the oldest forgotten
