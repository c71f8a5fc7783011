"""Platform settings: every knob the core needs, with its default, in one place.

Pure data. The CLI and drivers build a `PlatformSettings` from flags and the
environment; projection and container specs only read it.
"""

from __future__ import annotations

from dataclasses import dataclass

AGENT_PORT = 8000
TOKEN_PATH = "/configs/.auth_token"
CONFIG_MOUNT = "/configs"
AGENT_UID = 10001


@dataclass(frozen=True)
class PlatformSettings:
    registry_url: str = "http://host.docker.internal:8081"
    """URL at which agents reach the registry (the workspace network's gateway)."""

    instance: str = "default"
    """Controller instance: scopes container names, volumes and the labels it lists."""

    network: str = "wsctl"
    """Docker network every workspace container joins."""

    agent_port: int = AGENT_PORT
    """Port the agent serves A2A on inside its container."""

    heartbeat_seconds: int = 5
    """How often the agent heartbeats; the registry's staleness TTL is a multiple."""

    pids_limit: int = 256
    """Maximum number of processes in a workspace container."""

    log_level: str = "info"
    """Default LOG_LEVEL for agents when the spec does not set one."""

    heartbeat_ttl_factor: int = 3
    """A heartbeat older than factor x heartbeat_seconds is stale."""

    crash_window_seconds: int = 300
    """Container deaths counted for crash-loop detection happen within this window."""

    crash_loop_threshold: int = 3
    """This many deaths in the window make the workspace CrashLooping."""

    crash_backoff_seconds: float = 10.0
    """First delay before recreating a crash-looping workspace; doubles per crash, capped."""

    crash_backoff_max_seconds: float = 300.0

    stop_timeout_seconds: int = 5
    """Grace period for SIGTERM before Docker kills an old container."""

    @property
    def heartbeat_ttl_seconds(self) -> float:
        return float(self.heartbeat_seconds * self.heartbeat_ttl_factor)
