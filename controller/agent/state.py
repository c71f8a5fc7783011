"""Shared, thread-safe agent state: health, active tasks, agent card."""

from __future__ import annotations

import threading
from typing import Any

from . import __version__
from .config import NO_LLM_CREDENTIAL, Config


class AgentState:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._active_tasks = 0
        self._llm_error: str | None = None

    def health(self) -> tuple[str, str | None]:
        """Return ``(status, error_detail)``; status is ``healthy`` or ``unhealthy``."""
        if not self._config.has_llm_credential:
            return "unhealthy", NO_LLM_CREDENTIAL
        with self._lock:
            if self._llm_error is not None:
                return "unhealthy", self._llm_error
        return "healthy", None

    def set_llm_error(self, detail: str | None) -> None:
        with self._lock:
            self._llm_error = detail

    @property
    def active_tasks(self) -> int:
        with self._lock:
            return self._active_tasks

    def task_started(self) -> None:
        with self._lock:
            self._active_tasks += 1

    def task_finished(self) -> None:
        with self._lock:
            self._active_tasks = max(0, self._active_tasks - 1)



def agent_card(config: Config, url: str) -> dict[str, Any]:
    """An A2A-style agent card describing this agent."""
    return {
        "name": config.workspace_name,
        "description": f"wsctl reference agent for workspace {config.workspace_id}",
        "url": url,
        "version": __version__,
        "protocolVersion": "0.3.0",
        "preferredTransport": "JSONRPC",
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "capabilities": {},
        "skills": [
            {
                "id": "chat",
                "name": "Chat",
                "description": "Answers a text message using the configured LLM.",
                "tags": ["chat", "llm"],
            }
        ],
    }
