"""The running agent: HTTP server and registry loop (on the agent kit), each in a daemon thread."""

from __future__ import annotations

import threading

from . import llm
from .config import Config
from .registry_client import KitAgent, RegistryClient
from .server import AgentServer, Completer
from .state import AgentState

POLL_SECONDS = 0.1  # how quickly the HTTP loop notices shutdown


class Agent:
    """The HTTP server and the registry loop, each in a daemon thread."""

    def __init__(self, config: Config, completer: Completer = llm.complete) -> None:
        self.config = config
        self.stop = threading.Event()
        self.state = AgentState(config)
        self.kit = KitAgent(config, self.stop)
        self.server = AgentServer(config, self.state, self.kit, completer)
        self.kit.port = self.server.port
        self.registry = RegistryClient(config, self.state, self.kit, self.server.port)
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        threads = (
            threading.Thread(
                target=self.server.serve_forever,
                kwargs={"poll_interval": POLL_SECONDS},
                name="agent-http",
                daemon=True,
            ),
            threading.Thread(target=self.registry.run, name="agent-registry", daemon=True),
        )
        for thread in threads:
            thread.start()
            self._threads.append(thread)

    def shutdown(self, timeout: float = 2.0) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(timeout)
