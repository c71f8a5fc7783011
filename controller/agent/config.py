"""Agent configuration, read once from the environment."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

REGISTER_PAYLOADS = ("normal", "no_url", "private_url", "bad_card")
PRIVATE_URL = "http://10.11.12.13:8000"
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
DEFAULT_MODEL = "claude-sonnet-4-5"
NO_LLM_CREDENTIAL = "llm-auth: no ANTHROPIC_AUTH_TOKEN set"


class ConfigError(ValueError):
    """An environment variable has a value the agent cannot use."""


@dataclass(frozen=True)
class Config:
    workspace_id: str
    workspace_name: str
    registry_url: str
    port: int = 8000
    bind_host: str = "0.0.0.0"  # noqa: S104 - the agent must be reachable from the host
    heartbeat_seconds: float = 5.0
    token_file: str = "/configs/.auth_token"
    a2a_credential_file: str = "/configs/.a2a_credential"
    """What a caller of the A2A port must present as `Authorization: Bearer` (written by
    the controller before the container starts; the agent answers nobody else)."""
    log_level: str = "info"
    anthropic_base_url: str = DEFAULT_ANTHROPIC_BASE_URL
    anthropic_auth_token: str | None = None
    anthropic_api_key: str | None = None
    anthropic_model: str = DEFAULT_MODEL
    advertise_url: str | None = None
    boot_delay_seconds: float = 0.0
    register_payload: str = "normal"
    exit_after_seconds: float | None = None
    register_once: bool = False
    reject_grace_seconds: float = 0.0
    """With register_once: wait this long after a refused register before heartbeating."""
    workspace_dir: str | None = None
    """WSCTL_WORKSPACE_DIR: the workspace's storage volume (history lives there)."""
    echo: str | None = None
    """Test knob AGENT_ECHO: printed at start, as a careless program would print a key."""

    @property
    def has_llm_credential(self) -> bool:
        return bool(self.anthropic_auth_token or self.anthropic_api_key)

    def claimed_url(self, port: int | None = None) -> str:
        """The URL the agent claims at registration (before payload knobs)."""
        if self.advertise_url:
            return self.advertise_url
        return f"http://{socket.gethostname()}:{port if port is not None else self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        e = os.environ if env is None else env

        def opt(name: str) -> str | None:
            value = e.get(name, "").strip()
            return value or None

        def num(name: str, default: float | None) -> float | None:
            raw = opt(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None
            if value < 0:
                raise ConfigError(f"{name} must not be negative, got {raw!r}")
            return value

        workspace_id = opt("WSCTL_WORKSPACE_ID")
        registry_url = opt("WSCTL_REGISTRY_URL")
        if workspace_id is None:
            raise ConfigError("WSCTL_WORKSPACE_ID is not set")
        if registry_url is None:
            raise ConfigError("WSCTL_REGISTRY_URL is not set")
        port_raw = opt("WSCTL_AGENT_PORT") or "8000"
        try:
            port = int(port_raw)
        except ValueError:
            raise ConfigError(f"WSCTL_AGENT_PORT must be an integer, got {port_raw!r}") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"WSCTL_AGENT_PORT out of range: {port}")
        payload = (opt("AGENT_REGISTER_PAYLOAD") or "normal").lower()
        if payload not in REGISTER_PAYLOADS:
            raise ConfigError(
                f"AGENT_REGISTER_PAYLOAD must be one of {', '.join(REGISTER_PAYLOADS)}, "
                f"got {payload!r}"
            )
        heartbeat = num("WSCTL_HEARTBEAT_SECONDS", 5.0)
        return cls(
            workspace_id=workspace_id,
            workspace_name=opt("WSCTL_WORKSPACE_NAME") or workspace_id.rsplit(".", 1)[-1],
            registry_url=registry_url.rstrip("/"),
            port=port,
            bind_host=opt("AGENT_BIND_HOST") or "0.0.0.0",  # noqa: S104
            heartbeat_seconds=max(heartbeat if heartbeat is not None else 5.0, 0.05),
            token_file=opt("WSCTL_TOKEN_FILE") or "/configs/.auth_token",
            a2a_credential_file=opt("WSCTL_A2A_CREDENTIAL_FILE") or "/configs/.a2a_credential",
            log_level=(opt("LOG_LEVEL") or "info").lower(),
            anthropic_base_url=opt("ANTHROPIC_BASE_URL") or DEFAULT_ANTHROPIC_BASE_URL,
            anthropic_auth_token=opt("ANTHROPIC_AUTH_TOKEN"),
            anthropic_api_key=opt("ANTHROPIC_API_KEY"),
            anthropic_model=opt("ANTHROPIC_MODEL") or DEFAULT_MODEL,
            advertise_url=opt("AGENT_ADVERTISE_URL"),
            boot_delay_seconds=num("AGENT_BOOT_DELAY_SECONDS", 0.0) or 0.0,
            register_payload=payload,
            exit_after_seconds=num("AGENT_EXIT_AFTER_SECONDS", None),
            register_once=opt("AGENT_REGISTER_ONCE") in {"1", "true", "yes"},
            reject_grace_seconds=num("AGENT_REJECT_GRACE_SECONDS", 0.0) or 0.0,
            workspace_dir=opt("WSCTL_WORKSPACE_DIR"),
            echo=opt("AGENT_ECHO"),
        )
