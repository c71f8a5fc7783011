"""The planner's vocabulary: the operations a Plan orders, its events, and the Plan.

Plain frozen data. `plan.py` decides which of these to emit; the executor
(`reconcile/execute.py`) walks `Plan.ops` in order and decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controller.core.conditions import DegradedReason
from controller.core.containerspec import ContainerSpec, VolumeSpec
from controller.core.model import WorkspaceStatus


class RecreateReason(StrEnum):
    CREATED = "Created"
    CONTAINER_MISSING = "ContainerMissing"
    CONTAINER_EXITED = "ContainerExited"
    OOM_KILLED = "OOMKilled"
    CONFIG_CHANGED = "ConfigChanged"
    RESTART_REQUESTED = "RestartRequested"
    TOKEN_REVOKED = "TokenRevoked"
    TOKEN_REJECTED = "TokenRejected"
    RESUMED = "Resumed"
    WOKEN = "Woken"
    """A suspended workspace was needed again (a message, an exec, `wsctl resume`)."""
    ENGINE_RESTARTED = "EngineRestarted"
    """The container exited while the Docker engine was away: not a crash of the agent."""
    LIVENESS_FAILED = "LivenessFailed"
    """The agent was not heard from (no heartbeat) for spec.livenessTimeoutSeconds: hung,
    or its container frozen. Counted as a crash for the crash-loop back-off."""
    STARTUP_TIMEOUT = "StartupTimeout"
    """The agent neither registered nor heartbeated within spec.startupTimeoutSeconds of
    its container's start. Once; a replacement that times out too waits a back-off.
    Counted as a crash for the crash-loop back-off."""


# ------------------------------------------------------------------ operations


@dataclass(frozen=True)
class CaptureDiagnostics:
    container_id: str
    reason: str


@dataclass(frozen=True)
class EnsureVolume:
    """Create the workspace's storage volume unless it exists. One that exists
    with another workspace uid was retained from a deleted workspace of the same
    namespace/name: it is re-attached, and an event says so."""

    volume: VolumeSpec
    first: bool = False
    """The workspace object's first container: a volume found is announced."""


@dataclass(frozen=True)
class CreateContainer:
    spec: ContainerSpec


@dataclass(frozen=True)
class WriteToken:
    """Mint a token, write it into the (not yet started) container's config volume,
    with the container's A2A credential (made from its id)."""

    container_name: str
    generation: int
    container_id: str | None = None
    """The container's id when it exists before the plan (a wake's standby); else the
    id comes from the plan's own CreateContainer."""


@dataclass(frozen=True)
class StopContainer:
    container_id: str
    timeout: int


@dataclass(frozen=True)
class RemoveContainer:
    container_id: str


@dataclass(frozen=True)
class StartContainer:
    container_name: str


@dataclass(frozen=True)
class ActivateToken:
    """Record the written token's hash as the live one; older generations are revoked."""

    container_name: str
    generation: int
    expiration_seconds: int | None = None


@dataclass(frozen=True)
class RefreshToken:
    """Mint a token for the running container's generation, record it as current
    (the previous one stays valid until its expiry), then write it into the
    container's config volume, where the agent picks it up. Database first: a
    token file the registry does not know would be refused as invalid."""

    container_id: str
    generation: int
    expiration_seconds: int | None


@dataclass(frozen=True)
class RevokeTokens:
    pass


@dataclass(frozen=True)
class RemoveVolume:
    name: str


@dataclass(frozen=True)
class DeliverRestartContext:
    generation: int
    message: str


@dataclass(frozen=True)
class PurgeWorkspace:
    pass


@dataclass(frozen=True)
class Suspend:
    """Record the workspace as suspended (before its container is stopped), with why."""

    reason: str


Op = (CaptureDiagnostics | EnsureVolume | CreateContainer | WriteToken | StopContainer
      | RemoveContainer | StartContainer | ActivateToken | RefreshToken | RevokeTokens
      | RemoveVolume | DeliverRestartContext | PurgeWorkspace | Suspend)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    action: str  # none | create | recreate | resume | stop | delete | cleanup | deliver | refresh
    reason: str
    ops: tuple[Op, ...] = ()
    status: WorkspaceStatus | None = None
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    recreate_reason: RecreateReason | None = None
    degraded_reason: str = DegradedReason.HEALTHY.value
