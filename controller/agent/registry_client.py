"""The reference agent's side of the registry protocol, on the agent kit (`kit.py`).

The kit registers, heartbeats and follows the token file; this module adds what only
the reference agent has: its agent card, its health, and the test knobs
(``AGENT_BOOT_DELAY_SECONDS``, ``AGENT_REGISTER_PAYLOAD``, ``AGENT_REGISTER_ONCE``).
"""

from __future__ import annotations

import threading
from typing import Any

from . import kit, log
from .config import PRIVATE_URL, Config
from .state import AgentState, agent_card


def register_payload(config: Config, url: str) -> dict[str, Any]:
    """The register body, shaped by the ``AGENT_REGISTER_PAYLOAD`` test knob.

    ``no_url`` omits the top-level ``url`` key; ``private_url`` claims
    ``http://10.11.12.13:8000``; ``bad_card`` sends an ``agent_card`` that is not
    an object.
    """
    kind = config.register_payload
    claimed = PRIVATE_URL if kind == "private_url" else url
    card: Any = agent_card(config, claimed)
    if kind == "bad_card":
        card = "not-an-agent-card"
    body: dict[str, Any] = {"workspace_id": config.workspace_id, "url": claimed, "agent_card": card}
    if kind == "no_url":
        del body["url"]
    return body


class KitAgent(kit.Agent):
    """The kit, with the register body shaped by the test knob."""

    def __init__(self, config: Config, stop: threading.Event) -> None:
        super().__init__(config.workspace_id, config.registry_url, port=config.port,
                         heartbeat_seconds=config.heartbeat_seconds,
                         token_file=config.token_file,
                         a2a_credential_file=config.a2a_credential_file,
                         workspace_name=config.workspace_name,
                         workspace_dir=config.workspace_dir,
                         log=log.log, stop_event=stop, user_agent="wsctl-agent")
        self.config = config

    def register_body(self, card: Any, url: str) -> dict[str, Any]:
        return register_payload(self.config, url)


class RegistryClient:
    """Boot delay, then register and heartbeat until stopped."""

    def __init__(self, config: Config, state: AgentState, agent: KitAgent, port: int) -> None:
        self.config = config
        self.state = state
        self.agent = agent
        self.port = port

    def health(self) -> kit.Health:
        status, detail = self.state.health()
        return kit.Health(status, detail, self.state.active_tasks)

    def run(self) -> None:
        try:
            self._run()
        except kit.Stopped:
            return
        except kit.ProtocolMismatch as exc:
            log.error("registry_protocol_mismatch", error=str(exc))

    def _run(self) -> None:
        if self.config.boot_delay_seconds > 0:
            log.info("boot_delay", seconds=self.config.boot_delay_seconds)
            if self.agent.wait(self.config.boot_delay_seconds):
                return
        self.agent.wait_for_token()
        url = self.config.claimed_url(self.port)
        try:
            self.agent.register(agent_card(self.config, url), url,
                                retry_refused=not self.config.register_once)
        except kit.RegistrationRefused:
            log.info("register_once", action="heartbeat_without_retry",
                     after_seconds=self.config.reject_grace_seconds)
            if self.agent.wait(self.config.reject_grace_seconds):
                return
        self.agent.run_heartbeats(self.health)
