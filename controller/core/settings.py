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

AGENT_PORT = 8000
TOKEN_PATH = "/configs/.auth_token"
CONFIG_MOUNT = "/configs"
AGENT_UID = 10001


@dataclass(frozen=True)
class PlatformSettings:
    registry_url: str = f"http://host.docker.internal:{REGISTRY_PORT}"
    """URL at which agents reach the registry (the workspace network's gateway)."""

    instance: str = INSTANCE
    """Controller instance: scopes container names, volumes and the labels it lists."""

    network: str = NETWORK
    """Docker network every workspace container joins."""

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

    @property
    def heartbeat_ttl_seconds(self) -> float:
        return float(self.heartbeat_seconds * self.heartbeat_ttl_factor)


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
