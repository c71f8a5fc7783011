"""Condition transitions and phase. Pure: no I/O.

metav1.Condition semantics: `lastTransitionTime` moves only when the status
flips; reason, message and observedGeneration may change without moving it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from controller.core.model import Condition, ConditionStatus, ConditionType, Phase


class DegradedReason(StrEnum):
    HEALTHY = "Healthy"
    REGISTER_FAILED = "RegisterFailed"
    STARTUP_TIMEOUT = "StartupTimeout"
    HEARTBEAT_STALE = "HeartbeatStale"
    AGENT_UNHEALTHY = "AgentUnhealthy"
    CRASH_LOOPING = "CrashLooping"
    RECREATE_FAILED = "RecreateFailed"
    STOPPED = "Stopped"
    SUSPENDED = "Suspended"
    BUDGET_EXHAUSTED = "BudgetExhausted"
    READINESS_PROBE_FAILED = "ReadinessProbeFailed"
    """protocol none: spec.readinessProbe failed failureThreshold times in a row (or
    never succeeded within startupTimeoutSeconds)."""
    LIVENESS_PROBE_FAILED = "LivenessProbeFailed"
    """protocol none: spec.livenessProbe failed; the recreate waits out a back-off."""
    CONTAINER_PAUSED = "ContainerPaused"
    """protocol none: the container is docker-paused (it serves nothing)."""


@dataclass(frozen=True)
class Verdict:
    """The three conditions' values, before transition bookkeeping."""

    ready: tuple[ConditionStatus, str, str]
    degraded: tuple[ConditionStatus, str, str]
    progressing: tuple[ConditionStatus, str, str]


def transition(previous: Sequence[Condition], type_: str, status: ConditionStatus,
               reason: str, message: str, now: datetime,
               generation: int | None) -> Condition:
    old = next((c for c in previous if c.type == type_), None)
    moved = old is None or old.status != status
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if moved or old is None else old.last_transition_time,
        observed_generation=generation,
    )


def apply_verdict(previous: Sequence[Condition], verdict: Verdict, now: datetime,
                  generation: int | None) -> list[Condition]:
    values = (
        (ConditionType.READY, verdict.ready),
        (ConditionType.DEGRADED, verdict.degraded),
        (ConditionType.PROGRESSING, verdict.progressing),
    )
    return [transition(previous, type_.value, status, reason, message, now, generation)
            for type_, (status, reason, message) in values]


def phase_of(verdict: Verdict, *, paused: bool, failed: bool,
             suspended: bool = False) -> Phase:
    if paused:
        return Phase.STOPPED
    if suspended:
        return Phase.SUSPENDED
    if failed:
        return Phase.FAILED
    if verdict.degraded[0] == "True":
        return Phase.DEGRADED
    if verdict.ready[0] == "True":
        return Phase.ONLINE
    if verdict.progressing[0] == "True":
        return Phase.PROVISIONING
    return Phase.PENDING
