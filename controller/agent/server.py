"""HTTP side of the agent: health, agent card, and A2A JSON-RPC ``message/send``, on the
agent kit's A2A port (`kit.A2AServer`).

Every request must carry the controller's credential for this container,
``Authorization: Bearer <the contents of WSCTL_A2A_CREDENTIAL_FILE>``: anything else
(another workspace, a local process on the published port) gets 401 and is counted
in the next heartbeat (``a2a_refused``). Without the file every request is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import kit, llm, log
from .config import Config
from .history import History
from .state import AgentState, agent_card

Completer = Callable[[Config, list[dict[str, str]]], str]
"""(config, messages: earlier turns then the new user message) -> the reply text."""


class AgentServer(kit.A2AServer):
    """Each message is a turn of the conversation kept in the workspace (`History`)."""

    def __init__(
        self,
        config: Config,
        state: AgentState,
        guard: kit.Agent,
        completer: Completer = llm.complete,
    ) -> None:
        self.config = config
        self.state = state
        self.completer = completer
        self.history = History(config.workspace_dir)
        self.card_url = ""
        super().__init__(guard, self.answer, self.card, self.health,
                         address=(config.bind_host, config.port), server_version="wsctl-agent")
        self.card_url = config.claimed_url(self.port)

    def card(self) -> dict[str, Any]:
        return agent_card(self.config, self.card_url)

    def health(self) -> kit.Health:
        status, detail = self.state.health()
        return kit.Health(status, detail)

    def answer(self, text: str) -> str:
        self.state.task_started()
        try:
            reply = self.completer(self.config, self.history.messages(text))
        except llm.LLMError as exc:
            if exc.is_auth_error:
                self.state.set_llm_error(f"llm-auth: {exc}")
            log.warning("message_failed", error=str(exc))
            raise kit.A2AError(str(exc)) from None
        finally:
            self.state.task_finished()
        if self.config.has_llm_credential:
            self.state.set_llm_error(None)
        try:
            self.history.record(text, reply)
        except OSError as exc:  # the answer still goes out; the next turn will not know it
            log.warning("history_not_written", error=f"{type(exc).__name__}: {exc}")
        log.info("message_answered", chars_in=len(text), chars_out=len(reply))
        return reply
