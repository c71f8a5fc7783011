"""Traffic during chaos: a steady stream of A2A `message/send` to every workspace.

Every request carries a unique JSON-RPC id (also its messageId). A request the
controller answered with HTTP 200 is *acknowledged*: the proxy promises its
activity row exists before it answers. `verify()` looks the ids up in each
workspace's activity log (the API returns the newest 1000 rows, so it runs
periodically during the run as well as at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from controller.chaos.api import AdminClient, ApiError
from controller.chaos.model import RunClock, cancel_all

ACTIVITY_WINDOW = 1000


@dataclass
class Acked:
    request_id: str
    workspace: str
    sent_at: float
    acked_at: float
    confirmed_at: float | None = None


@dataclass(frozen=True)
class Failed:
    """A request the controller did not acknowledge."""

    workspace: str
    sent_at: float
    done_at: float
    outcome: str  # "HTTP 502 agent_unreachable", "HTTP 503 store_unavailable", "no answer"
    server_error: bool = False
    """The controller itself failed (see `outcome_of`): a violation whatever the fault."""


# 502s in which the agent, not the controller, failed (killed, paused, garbage).
AGENT_FAILURES = frozenset({"agent_unreachable", "bad_agent_response", "answer_too_large"})


def outcome_of(status: int, answer: Any, retry_after: str | None) -> tuple[str, bool]:
    """(outcome, server_error) of an unacknowledged message/send. A 503 with
    Retry-After (store or engine away) asks to retry, and a 502 naming an agent
    failure blames the agent; any other 5xx is the controller failing."""
    if not status:
        return "no answer", False
    cls = answer.get("class") if isinstance(answer, dict) else None
    outcome = f"HTTP {status}" + (f" {cls}" if cls else "")
    if status < 500:
        return outcome, False
    if status == 503 and retry_after:
        return outcome + " (Retry-After)", False
    return outcome, not (status == 502 and cls in AGENT_FAILURES)


@dataclass
class WorkloadStats:
    sent: int = 0
    acked: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    """Unacknowledged requests by outcome: 'HTTP 502', 'no answer', ..."""


class Workload:
    def __init__(self, api: AdminClient, clock: RunClock, workspaces: list[str], run_id: str,
                 interval: float = 1.0, timeout: float = 15.0) -> None:
        self.api = api
        self.clock = clock
        self.workspaces = workspaces
        self.run_id = run_id
        self.interval = interval
        self.timeout = timeout
        self.acked: dict[str, Acked] = {}
        self.failed: list[Failed] = []
        self.stats = WorkloadStats()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def start(self) -> None:
        for name in self.workspaces:
            self._tasks.append(asyncio.create_task(self._send_loop(name), name=f"load-{name}"))

    async def stop(self) -> None:
        self._stop.set()
        await cancel_all(self._tasks)

    async def _send_loop(self, name: str) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            request_id = f"chaos-{self.run_id}-{name}-{n}"
            sent_at = self.clock.now()
            self.stats.sent += 1
            status, answer, retry_after = await self.api.message_send_outcome(
                name, request_id, f"chaos ping {n}", self.timeout)
            if status == 200:
                self.stats.acked += 1
                self.acked[request_id] = Acked(request_id, name, sent_at, self.clock.now())
            else:
                outcome, server_error = outcome_of(status, answer, retry_after)
                self.stats.failures[outcome] += 1
                self.failed.append(Failed(name, sent_at, self.clock.now(), outcome,
                                          server_error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)  # the pacing

    async def verify(self) -> None:
        """Mark acknowledged requests whose activity row is present."""
        pending = {a.workspace for a in self.acked.values() if a.confirmed_at is None}
        for name in sorted(pending):
            try:
                rows = await self.api.activity(name, ACTIVITY_WINDOW)
            except ApiError:
                continue  # the controller may be down right now; the next pass retries
            seen = set()
            for row in rows:
                seen.update(request_ids(row.get("request")))
            now = self.clock.now()
            for acked in self.acked.values():
                if acked.workspace == name and acked.confirmed_at is None \
                        and acked.request_id in seen:
                    acked.confirmed_at = now

    def missing(self) -> list[Acked]:
        return sorted((a for a in self.acked.values() if a.confirmed_at is None),
                      key=lambda a: a.acked_at)


def request_ids(request: Any) -> set[str]:
    """The JSON-RPC id and the messageId of a stored request."""
    ids: set[str] = set()
    if not isinstance(request, dict):
        return ids
    if isinstance(request.get("id"), str):
        ids.add(request["id"])
    params = request.get("params")
    message = params.get("message") if isinstance(params, dict) else None
    if isinstance(message, dict) and isinstance(message.get("messageId"), str):
        ids.add(message["messageId"])
    return ids
