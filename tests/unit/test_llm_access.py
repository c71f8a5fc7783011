"""LlmAccess, what the gateway asks of the controller: the workspace looked up at most
once per TTL, the key per call, usage written off the call's path but counted toward
the budget at once, a wake when the budget is reached, every write awaited at close."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime

import pytest

from controller.app import llm
from controller.app.llm import LlmAccess
from controller.core.model import Workspace, WorkspaceKey
from controller.core.usage import Usage
from tests.unit.helpers import workspace

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DAY = NOW.date()
WS = "default.alice"


def budgeted(tokens: int | None) -> Workspace:
    spec: dict[str, object] = {"provider": "minimax",
                               "apiKey": {"secretRef": {"name": "k", "key": "v"}}}
    if tokens is not None:
        spec["budget"] = {"tokensPerDay": tokens}
    return workspace("alice", llm=spec)


class Store:
    def __init__(self) -> None:
        self.written: list[tuple[str, date, str, Usage, bool]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def record_llm_usage(self, workspace_id: str, day: date, provider: str,
                               usage: Usage, *, error: bool) -> None:
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("database went away")
        self.written.append((workspace_id, day, provider, usage, error))

    async def llm_tokens_on(self, workspace_id: str, day: date) -> int:
        return sum(u.total for w, d, _, u, _ in self.written if (w, d) == (workspace_id, day))


class Env:
    def __init__(self, ws: Workspace | None) -> None:
        self.ws = ws
        self.finds = 0
        self.keys = 0
        self.woken: list[WorkspaceKey] = []
        self.now = 0.0
        self.store = Store()
        self.access = LlmAccess(self.find, self.key, self.store, self.woken.append,
                                clock=lambda: NOW, monotonic=lambda: self.now)

    async def find(self, key: WorkspaceKey) -> Workspace | None:
        self.finds += 1
        return self.ws

    async def key(self, ws: Workspace) -> str | None:
        self.keys += 1
        return f"sk-{self.keys}"


async def test_the_workspace_is_looked_up_once_per_ttl_the_key_every_call() -> None:
    env = Env(budgeted(None))
    assert [await env.access.key_for(WS) for _ in range(3)] == ["sk-1", "sk-2", "sk-3"]
    assert await env.access.allowed(WS)
    assert env.finds == 1
    env.now += llm.WORKSPACE_TTL
    env.ws = budgeted(1)  # a budget set: seen after the TTL
    await env.access.key_for(WS)
    assert env.finds == 2


async def test_a_change_heard_of_is_looked_up_at_the_next_call() -> None:
    env = Env(budgeted(None))
    await env.access.key_for(WS)
    env.access.forget(WS)
    await env.access.key_for(WS)
    env.access.forget()  # the listener reconnected: anything may have changed
    await env.access.key_for(WS)
    assert env.finds == 3


async def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "MAX_CACHED_WORKSPACES", 3)
    env = Env(budgeted(None))
    for n in range(10):
        await env.access.key_for(f"default.w{n}")
    assert len(env.access._workspaces) == 3
    await env.access.key_for("default.w9")  # the newest stayed
    assert env.finds == 10


async def test_an_unknown_id_is_no_workspace() -> None:
    env = Env(budgeted(None))
    assert await env.access.key_for("no-dot-here") is None


async def test_usage_counts_toward_the_budget_before_it_is_written() -> None:
    env = Env(budgeted(100))
    env.store.gate.clear()  # the database is slow
    await env.access.record(WS, "minimax", Usage(input=60, output=40), 200, None, 0.1)
    assert not await env.access.allowed(WS)  # 100 pending of 100: the next call is refused
    assert env.woken == [WorkspaceKey.from_id(WS)]
    assert env.store.written == []
    env.store.gate.set()
    await env.access.close()
    assert [(w, d, p, u.total, e) for w, d, p, u, e in env.store.written] == [
        (WS, DAY, "minimax", 100, False)]
    assert env.access._pending == {}
    assert not await env.access.allowed(WS)  # now written: still refused


async def test_reaching_the_budget_wakes_the_workspace_once_written() -> None:
    env = Env(budgeted(100))
    await env.access.record(WS, "minimax", Usage(input=30, output=20), 200, None, 0.1)
    await env.access.close()
    assert env.woken == [] and await env.access.allowed(WS)
    await env.access.record(WS, "minimax", Usage(input=30, output=20), 200, None, 0.1)
    await env.access.close()
    assert env.woken == [WorkspaceKey.from_id(WS)]  # for its Degraded BudgetExhausted


async def test_a_refusal_is_an_error_with_no_tokens_and_wakes_nobody() -> None:
    env = Env(budgeted(None))
    await env.access.record(WS, "minimax", Usage(), 429, "budget_exhausted", 0.0)
    await env.access.close()
    assert [(u.total, e) for _, _, _, u, e in env.store.written] == [(0, True)]
    assert env.woken == []


async def test_a_failed_write_is_logged_and_releases_its_pending_tokens(
        caplog: pytest.LogCaptureFixture) -> None:
    env = Env(budgeted(100))
    env.store.fail = True
    with caplog.at_level(logging.WARNING, "wsctl.llm_gateway"):
        await env.access.record(WS, "minimax", Usage(input=500), 200, None, 0.1)
        await env.access.close()
    assert "default.alice: LLM usage not recorded (ConnectionError)" in caplog.text
    assert env.access._pending == {}
    assert await env.access.allowed(WS)  # what was never written does not count


async def test_writes_in_flight_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow database makes calls wait for a slot, never piles up tasks."""
    env = Env(budgeted(None))
    env.access._slots = asyncio.Semaphore(2)
    env.store.gate.clear()
    calls = [asyncio.ensure_future(env.access.record(WS, "minimax", Usage(input=1), 200,
                                                     None, 0.1)) for _ in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert sum(c.done() for c in calls) == 2 and len(env.access._writes) == 2
    env.store.gate.set()
    await asyncio.gather(*calls)
    await env.access.close()
    assert len(env.store.written) == 5
