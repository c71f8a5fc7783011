"""What the controller sees of the world: containers and the agent registry.

Plain frozen data produced by the adapters, next to their queries, and consumed
by the pure planner as is: the store's `observe_registry` returns an `Observed`
of the registry side, the engine lists `ObservedContainer`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.core.model import RegisterFailure

HEALTHY = "healthy"
"""The agent's heartbeat status when all is well (the protocol's only other is below)."""
HEARTBEAT_STATUSES = (HEALTHY, "unhealthy")


@dataclass(frozen=True)
class ObservedContainer:
    id: str
    name: str
    workspace_id: str
    state: str  # docker's: created | running | paused | restarting | exited | dead | removing
    config_hash: str | None
    token_generation: int
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    restarted_at: str = ""
    """The spec.restartedAt the container was built for (label), "" if none."""
    host_port: int | None = None
    ip_address: str | None = None

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting")

    @property
    def ever_started(self) -> bool:
        return self.started_at is not None


@dataclass(frozen=True)
class AuthFailure:
    """A rejected agent request (401) that named this workspace."""

    at: datetime
    cls: str  # invalid_token | stale_token | expired_token | wrong_workspace | missing_token
    generation: int | None = None
    """Generation of the presented token when it was a known (revoked) one."""


@dataclass(frozen=True)
class ObservedAgent:
    registered_at: datetime | None = None
    registered_generation: int | None = None
    last_heartbeat_at: datetime | None = None
    heartbeat_generation: int | None = None
    heartbeat_status: str | None = None  # healthy | unhealthy
    heartbeat_error: str | None = None
    register_failure: RegisterFailure | None = None
    """The registry's failure marker: the same object the status reports."""
    last_auth_failure: AuthFailure | None = None
    active_tasks: int | None = None
    """Tasks in progress, as the agent's last heartbeat reported them."""


@dataclass(frozen=True)
class ObservedTokens:
    live_generation: int | None = None
    live_expires_at: datetime | None = None
    max_generation: int = 0
    live_issued_at: datetime | None = None
    """When the current token (the latest refresh of the live generation) was issued."""


@dataclass(frozen=True)
class ProbeResults:
    """What the controller's probes saw of one container (spec.agent.protocol: none)."""

    container_id: str
    ready: bool | None = None
    """The readiness probe's verdict: None until it has one (a success, or
    failureThreshold failures in a row); without a readiness probe, None."""
    ever_ready: bool = False
    """The readiness probe succeeded at least once in this container."""
    ready_detail: str = ""
    """Why it is not ready: the probe and its last failure."""
    live_failed: str | None = None
    """Set once the liveness probe failed failureThreshold times in a row: the probe
    and its last failure."""


@dataclass(frozen=True)
class Observed:
    containers: tuple[ObservedContainer, ...] = ()
    agent: ObservedAgent = field(default_factory=ObservedAgent)
    tokens: ObservedTokens = field(default_factory=ObservedTokens)
    recent_crashes: int = 0
    """Containers of this workspace that died (not stopped by us) in the crash window."""
    last_crash_at: datetime | None = None
    last_error: str | None = None
    """The last failure executing a plan for this workspace, if the latest attempt failed."""
    suspended_at: datetime | None = None
    """Set while the workspace is suspended (idle, or `wsctl suspend`)."""
    suspend_reason: str | None = None
    last_activity_at: datetime | None = None
    """The newest activity row (an A2A message, an exec, a copy): idle is measured
    from it (or from the container's start, if later)."""
    engine_outages: tuple[tuple[datetime, datetime], ...] = ()
    """Recent spans in which the Docker engine did not answer (lost, back): a container
    that finished in one died with the engine, not by itself."""
    heartbeats_since: datetime | None = None
    """Since when the registry has been able to hear agents without a break (the
    controller's start, or the end of the last database outage it saw): an agent
    silent before then is not held to its startup or liveness timeout."""
    probes: ProbeResults | None = None
    """The controller's probes of the current container (protocol none), if any ran."""
    llm_tokens_today: int = 0
    """LLM tokens the workspace's calls through the gateway used this UTC day (read
    only when spec.llm.budget is set)."""


@dataclass(frozen=True)
class ContainerDiagnostics:
    """What is captured of a container before it is replaced (never env values)."""

    container_id: str
    state: dict[str, Any]
    exit_code: int | None
    oom_killed: bool
    log_tail: str
    env_names: dict[str, str]  # name -> "set" | "unset"
