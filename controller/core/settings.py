"""Settings: every default wsctl has, in one place, and the platform knobs the core reads.

The module-level defaults are what `wsctl run`'s flags, `RunOptions`, the drivers
and `wsctl doctor` start from (argparse reads them; nothing spells them again).
`PlatformSettings` is pure data the CLI and drivers build from flags and the
environment; projection and container specs only read it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

LISTEN_HOST = "127.0.0.1"
API_PORT = 8080
"""The admin/CLI API (`--listen`, default 127.0.0.1:8080)."""
REGISTRY_PORT = 8081
"""The agent registry, on the workspace network's gateway (`--registry-listen`)."""
NETWORK = "wsctl"
INSTANCE = "default"
HEARTBEAT_SECONDS = 5
RESYNC_SECONDS = 30.0
"""Full resync period; events drive reconciles in between."""
WORKERS = 16
"""Workspaces reconciled at once."""
DOCKER_PARALLELISM = 8
"""Docker API calls in flight at most."""
CRASH_LOOP_THRESHOLD = 3

# Retention (nothing grows without bound): a background pass of the controller
# deletes what is beyond these, in bounded batches. 0 turns a count or age limit
# off (the token grace period of 0 deletes a token as soon as it is unusable).
RETAIN_ACTIVITY_DAYS = 30.0
"""Activity (proxied messages) older than this is deleted (`--retain-activity-days`)."""
RETAIN_ACTIVITY_ROWS = 10_000
"""... and at most this many activity rows are kept per workspace, the newest."""
RETAIN_EVENTS = 1_000
"""Events kept per workspace, the newest (`--retain-events`)."""
RETAIN_DIAGNOSTICS = 50
"""Diagnostics (dead containers) kept per workspace, the newest (`--retain-diagnostics`)."""
RETAIN_HISTORY_DAYS = 30.0
"""Events and diagnostics older than this are deleted too, so the history of deleted
workspaces goes in the end (`--retain-history-days`)."""
RETAIN_TOKEN_GRACE_SECONDS = 3600.0
"""A token row that can no longer authenticate (revoked, or superseded by a refresh and
past its own expiry) is deleted this long after it stopped being usable; until then
the registry still tells such a token apart (stale_token, expired_token) from an
unknown one. The current token, a superseded one still before its expiry and each
workspace's newest row are never deleted."""
RETAIN_LLM_USAGE_DAYS = 400.0
"""Days of per-workspace LLM usage kept (`wsctl usage`): a year and a bit."""
RETENTION_INTERVAL_SECONDS = 300.0
"""Time between retention passes (`--retention-interval`)."""
RETENTION_FIRST_DELAY_SECONDS = 10.0
"""The first pass runs this long after the controller starts (or at the interval, if shorter)."""
RETENTION_BATCH_ROWS = 1_000
"""Rows deleted per statement (one short transaction each)."""
RETENTION_MAX_BATCHES = 100
"""Statements per table per pass at most; what is left waits for the next pass."""

DEFAULT_IMAGE = "wsctl/agent:latest"
"""The reference agent's image, built locally (`wsctl images build`)."""
CLAUDE_CODE_IMAGE = "wsctl/agent-claude-code:latest"
"""`wsctl images build --agent claude-code` builds it; no workspace gets it by default."""
AGENT_PORT = 8000
EGRESS_PORT = REGISTRY_PORT + 1
"""The egress proxy, beside the registry on the gateway (`--egress-port`)."""


def egress_port_for(registry_port: int, egress_port: int | None) -> int:
    """`--egress-port`, or by default the port after the registry's."""
    return egress_port if egress_port is not None else registry_port + 1
TOKEN_PATH = "/configs/.auth_token"
A2A_CREDENTIAL_PATH = "/configs/.a2a_credential"
"""What the agent must see in `Authorization: Bearer` on its A2A port (per container)."""
CONFIG_MOUNT = "/configs"
AGENT_UID = 10001


@dataclass(frozen=True)
class PlatformSettings:
    registry_url: str = f"http://host.docker.internal:{REGISTRY_PORT}"
    """URL at which agents reach the registry (the workspace network's gateway)."""

    instance: str = INSTANCE
    """Controller instance: scopes container names, volumes and the labels it lists."""

    network: str = NETWORK
    """Docker network every workspace container joins (internal, no inter-container
    traffic: the workspace boundary)."""

    egress_proxy_url: str = f"http://host.docker.internal:{EGRESS_PORT}"
    """The egress proxy, as an `allowlist` workspace's HTTP(S)_PROXY."""

    @property
    def open_network(self) -> str:
        """The ordinary bridge network an `open` workspace joins as well."""
        return f"{self.network}-open"

    agent_port: int = AGENT_PORT
    """Port the agent serves A2A on inside its container."""

    heartbeat_seconds: int = HEARTBEAT_SECONDS
    """How often the agent heartbeats; the registry's staleness TTL is a multiple."""

    pids_limit: int = 256
    """Maximum number of processes in a workspace container."""

    log_level: str = "info"
    """Default LOG_LEVEL for agents when the spec does not set one."""

    heartbeat_ttl_factor: int = 3
    """A heartbeat older than factor x heartbeat_seconds is stale."""

    crash_window_seconds: int = 300
    """Container deaths counted for crash-loop detection happen within this window."""

    crash_loop_threshold: int = CRASH_LOOP_THRESHOLD
    """This many deaths in the window make the workspace CrashLooping."""

    crash_backoff_seconds: float = 10.0
    """First delay before recreating a crash-looping workspace; doubles per crash, capped."""

    crash_backoff_max_seconds: float = 300.0

    stop_timeout_seconds: int = 5
    """Grace period for SIGTERM before Docker kills an old container."""

    idle_suspend: bool = True
    """Act on spec.idleTimeoutSeconds. Off in Kubernetes mode, which has no
    wake-on-request path yet (no admin API proxy a message could wake it through)."""

    @property
    def heartbeat_ttl_seconds(self) -> float:
        return float(self.heartbeat_seconds * self.heartbeat_ttl_factor)


@dataclass(frozen=True)
class Retention:
    """How much history the store keeps (the `RETAIN_*` defaults above; 0: no limit)."""

    activity_days: float = RETAIN_ACTIVITY_DAYS
    activity_rows: int = RETAIN_ACTIVITY_ROWS
    events: int = RETAIN_EVENTS
    diagnostics: int = RETAIN_DIAGNOSTICS
    history_days: float = RETAIN_HISTORY_DAYS
    """Age limit of events and diagnostics."""
    token_grace_seconds: float = RETAIN_TOKEN_GRACE_SECONDS
    """Also of revoked LLM credentials."""
    llm_usage_days: float = RETAIN_LLM_USAGE_DAYS
    batch_rows: int = RETENTION_BATCH_ROWS
    max_batches: int = RETENTION_MAX_BATCHES

    def __post_init__(self) -> None:
        if min(self.activity_days, self.activity_rows, self.events, self.diagnostics,
               self.history_days, self.token_grace_seconds, self.llm_usage_days) < 0:
            raise ValueError("retention limits cannot be negative")
        if self.batch_rows < 1 or self.max_batches < 1:
            raise ValueError("retention batch_rows and max_batches must be positive")


def default_data_dir() -> Path:
    """`$WSCTL_DATA_DIR`, else `$XDG_DATA_HOME/wsctl`, else ~/.local/share/wsctl."""
    env = os.environ.get("WSCTL_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "wsctl"


def default_cache_dir() -> Path:
    """`$WSCTL_CACHE_DIR`, else `$XDG_CACHE_HOME/wsctl`, else ~/.cache/wsctl."""
    env = os.environ.get("WSCTL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "wsctl"
