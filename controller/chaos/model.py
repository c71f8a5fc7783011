"""The harness's records: the planned faults, what happened, and what went wrong.

Plain data, no I/O. Times are seconds since the run started (monotonic), so a
report reads as one timeline; `RunClock` maps the controller's wall-clock
timestamps (events) onto it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Scope = Literal["workspace", "fleet"]

# The invariants the verdict names (docs/design.md section 8, plus the continuous probes).
ONE_CONTAINER = "one-container"  # 8.1: one container, current config hash, Ready; no orphans
TOKENS = "tokens"  # 8.2: one live token per workspace, older ones rejected
ACTIVITY = "activity"  # 8.3: every acknowledged request has its activity row
FILES = "files"  # every acknowledged write into a workspace's storage is still there
SECRETS = "secrets"  # 8.4: no planted secret in logs, events, status, diagnostics
DEGRADED_CAUSE = "degraded-cause"  # 8.5: every Degraded names the injected cause
SINGLE_RUNNER = "single-runner"  # continuous: never two running containers for a workspace
NO_FAILED = "no-failed"  # continuous: phase never Failed without an injected cause
SERVES = "serves"  # 8.1 read strictly: a converged workspace answers message/send
CONVERGE = "converge"  # a fault was followed by convergence within the fault timeout
ANSWERS = "answers"  # no 5xx from the controller itself, fault or not (503+Retry-After is fine)
ISOLATION = "isolation"  # no lateral path works (the `lateral` fault's probes)
INJECTED = "injected"  # at most MAX_NOT_INJECTED of the planned faults skipped or missed
MAX_NOT_INJECTED = 0.05
INVARIANTS = (ONE_CONTAINER, SERVES, ANSWERS, TOKENS, ACTIVITY, FILES, SECRETS, DEGRADED_CAUSE,
              ISOLATION, SINGLE_RUNNER, NO_FAILED, CONVERGE, INJECTED)


@dataclass(frozen=True)
class FaultPlan:
    """One scheduled fault: a pure function of the seed (see schedule.py)."""

    index: int
    kind: str
    target: str | None
    """Workspace name; None for fleet faults (controller, database, engine)."""
    delay: float
    """Seconds after the previous fault was injected (paces the run at --rate)."""
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str, default: str = "") -> str:
        return dict(self.params).get(name, default)

    @property
    def label(self) -> str:
        where = self.target or "fleet"
        extra = ",".join(f"{k}={v}" for k, v in self.params)
        return f"#{self.index} {self.kind}{'(' + extra + ')' if extra else ''} on {where}"

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "target": self.target,
                "delay": self.delay, "params": dict(self.params)}


@dataclass
class FaultRecord:
    """What happened to one planned fault."""

    plan: FaultPlan
    affected: tuple[str, ...] = ()
    """Workspaces the fault may disturb (the target, or the whole fleet)."""
    may_cause: frozenset[str] = frozenset()
    must_cause: frozenset[str] = frozenset()
    before_container: str | None = None
    injected_at: float | None = None
    lifted_at: float | None = None
    """When the cause was gone (unpaused, reconnected, spec reverted, controller back)."""
    converged_at: float | None = None
    detected: set[str] = field(default_factory=set)
    """Degraded reasons seen on an affected workspace while the fault was active."""
    skipped: str | None = None
    missed: str | None = None
    """Injected, but not as planned (e.g. the controller never reached the stall point)."""
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)
    """lateral: the paths that worked (each a violation of `isolation`)."""
    suspensions_before: int | None = None
    """suspend: the workspace's `Suspended` event count before the request."""

    @property
    def converge_seconds(self) -> float | None:
        if self.converged_at is None or self.lifted_at is None:
            return None
        return max(0.0, self.converged_at - self.lifted_at)

    def window(self, end_of_run: float) -> tuple[float, float]:
        start = self.injected_at if self.injected_at is not None else end_of_run
        end = self.converged_at if self.converged_at is not None else end_of_run
        return start, end

    def to_json(self) -> dict[str, Any]:
        return {**self.plan.to_json(), "label": self.plan.label, "affected": list(self.affected),
                "may_cause": sorted(self.may_cause), "must_cause": sorted(self.must_cause),
                "injected_at": _round(self.injected_at), "lifted_at": _round(self.lifted_at),
                "converged_at": _round(self.converged_at),
                "converge_seconds": _round(self.converge_seconds),
                "detected": sorted(self.detected), "skipped": self.skipped,
                "missed": self.missed, "error": self.error,
                "notes": self.notes}


@dataclass(frozen=True)
class Violation:
    invariant: str
    workspace: str | None
    fault: str | None
    """The fault (label) in effect, "none" if none was, None if not applicable."""
    detail: str
    at: float

    def line(self) -> str:
        where = self.workspace or "-"
        return f"[{self.invariant}] workspace {where}, fault {self.fault or '-'}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "workspace": self.workspace, "fault": self.fault,
                "detail": self.detail, "at": _round(self.at)}


@dataclass(frozen=True)
class DegradedSeen:
    """A Degraded=True seen on a workspace, from a status sample or a Warning event."""

    at: float
    workspace: str
    reason: str
    message: str
    source: str  # "status" | "event"


@dataclass(frozen=True)
class PhaseChange:
    at: float
    workspace: str
    phase: str
    reason: str  # Degraded reason when Degraded, else ""


class RunClock:
    """Seconds since the start of the run; maps wall-clock times onto that axis."""

    def __init__(self) -> None:
        self._mono = time.monotonic()
        self._wall = datetime.now(UTC)

    def now(self) -> float:
        return time.monotonic() - self._mono

    @property
    def started(self) -> datetime:
        return self._wall

    def of(self, wall: datetime | str) -> float:
        if isinstance(wall, str):
            wall = datetime.fromisoformat(wall.replace("Z", "+00:00"))
        return (wall - self._wall).total_seconds()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait until each has ended."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
