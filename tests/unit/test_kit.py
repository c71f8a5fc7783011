"""The agent kit (``controller/agent/kit.py``, ``wsctl_kit`` in the image) against the
controller's real registry handlers, served on 127.0.0.1 from a thread with an
in-memory store: what the kit sends is what the controller checks.

No sleeps-and-hope: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from controller.agent import kit
from controller.api import registry as registry_module
from controller.api.registry import MAX_BODY, Registry
from controller.core import tokens
from tests.unit.fakes import FakeStore
from tests.unit.helpers import A2A_CREDENTIAL, a2a, message_send, workspace

REPO = Path(__file__).resolve().parents[2]
ALICE = "default.alice"
OWN_NAME = "wsctl-default.alice-g1"
OWN_URL = f"http://{OWN_NAME}:8000"
A2A = A2A_CREDENTIAL
CARD = {"name": "alice", "url": OWN_URL, "version": "1", "skills": [{"id": "echo"}]}
DEADLINE = 10.0
T = TypeVar("T")


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def no_dns(host: str) -> list[str]:
    raise OSError(-2, "Name or service not known")


async def identity(workspace_id: str) -> tuple[set[str], set[str]]:
    # The kit connects from 127.0.0.1: as if from alice's own container.
    return ({OWN_NAME}, {"127.0.0.1"}) if workspace_id == ALICE else (set(), set())


@dataclass
class LiveRegistry:
    """The controller's registry app on 127.0.0.1, its event loop in a thread."""

    store: FakeStore
    registry: Registry
    url: str
    loop: asyncio.AbstractEventLoop
    token_file: Path
    token: str = ""
    generation: int = 0
    lines: list[str] = field(default_factory=list)
    presented: list[str] = field(default_factory=list)
    """The digests of the tokens the registry was shown, in order."""

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(DEADLINE)

    def rotate(self) -> str:
        """A token for generation 1, then refreshed in place as the controller does with
        spec.tokenExpirationSeconds (the store first; the old one stays valid until it
        expires), written to the token file."""
        self.token = tokens.mint()
        if self.generation == 0:
            self.generation = 1
            self.call(self.store.insert_token(ALICE, 1, tokens.digest(self.token)))
        else:
            self.call(self.store.rotate_token(ALICE, 1, tokens.digest(self.token),
                                              expires_at=None))
        self.token_file.write_text(self.token)
        return self.token

    def log(self, level: str, event: str, **fields: object) -> None:
        self.lines.append(" ".join([level, event, *(f"{k}={v}" for k, v in fields.items())]))

    def agent(self, **options: Any) -> kit.Agent:
        options.setdefault("heartbeat_seconds", 0.05)
        return kit.Agent(ALICE, self.url, token_file=str(self.token_file),
                         a2a_credential_file=str(self.token_file.parent / ".a2a_credential"),
                         log=self.log, **options)


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveRegistry]:
    monkeypatch.setattr(registry_module, "_resolve", no_dns)
    store = FakeStore()
    registry = Registry(store, identity, lambda _id: None)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner: list[web.AppRunner] = []

    async def serve() -> None:
        await store.apply_workspace(workspace("alice"))
        app = web.Application(client_max_size=MAX_BODY)  # as runtime.py builds it
        app.add_routes(registry.routes())
        runner.append(web.AppRunner(app))
        await runner[0].setup()
        await web.TCPSite(runner[0], "127.0.0.1", 0).start()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(DEADLINE)
    port = runner[0].addresses[0][1]
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / ".a2a_credential").write_text(A2A + "\n")
    server = LiveRegistry(store, registry, f"http://127.0.0.1:{port}/", loop,
                          configs / ".auth_token")
    find_token = store.find_token

    async def recording_find_token(token_hash: str) -> Any:
        server.presented.append(token_hash)
        return await find_token(token_hash)

    monkeypatch.setattr(store, "find_token", recording_find_token)
    server.rotate()
    yield server
    server.call(runner[0].cleanup())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(DEADLINE)
    loop.close()


def test_the_kit_and_the_controller_speak_the_same_protocol_version() -> None:
    assert kit.PROTOCOL_VERSION == registry_module.PROTOCOL_VERSION
    assert kit.PROTOCOL_HEADER == registry_module.PROTOCOL_HEADER


def test_register_then_heartbeat_with_health(live: LiveRegistry) -> None:
    agent = live.agent()
    agent.register(CARD)  # the url is the card's
    registration = live.store.registration(ALICE)
    assert registration.registered_at is not None
    assert registration.register_failure is None
    assert agent.controller_protocol == kit.PROTOCOL_VERSION
    agent.heartbeat(kit.Health.unhealthy("llm-auth: no key", active_tasks=2))
    registration = live.store.registration(ALICE)
    assert registration.heartbeat_status == "unhealthy"
    assert registration.heartbeat_error_detail == "llm-auth: no key"
    assert registration.active_tasks == 2
    agent.heartbeat()  # healthy by default
    assert live.store.registration(ALICE).heartbeat_status == "healthy"
    assert any(line.startswith("info register_ok") for line in live.lines)


def test_background_heartbeats_report_health_until_stopped(live: LiveRegistry) -> None:
    agent = live.agent()
    agent.register(CARD)
    health = [kit.Health()]
    thread = agent.start_heartbeats(lambda: health[0])
    wait_until(lambda: live.registry.counters.heartbeats >= 3, "three heartbeats")
    health[0] = kit.Health.unhealthy("disk full")
    wait_until(lambda: live.store.registration(ALICE).heartbeat_error_detail == "disk full",
               "the new health reported")
    with pytest.raises(kit.KitError, match="already running"):
        agent.start_heartbeats(lambda: health[0])
    agent.stop()
    assert not thread.is_alive()
    beats = live.registry.counters.heartbeats
    time.sleep(0.2)  # four intervals: none may come
    assert live.registry.counters.heartbeats == beats


def test_a_failing_health_check_is_reported_not_raised(live: LiveRegistry) -> None:
    agent = live.agent()
    agent.register(CARD)

    def broken() -> kit.Health:
        raise RuntimeError("model not loaded")

    agent.start_heartbeats(broken)
    wait_until(lambda: live.store.registration(ALICE).heartbeat_error_detail
               == "health check failed: RuntimeError: model not loaded", "unhealthy beat")
    agent.stop()


def test_token_follows_the_file_the_controller_rotates(live: LiveRegistry) -> None:
    agent = live.agent()
    first = live.token
    assert agent.token() == first
    agent.register(CARD)
    agent.start_heartbeats(kit.Health)
    live.token_file.write_text(first[:20])  # a write caught half way
    assert agent.token() == first  # not a whole token: the held one is kept
    second = live.rotate()
    assert agent.token() == second
    beats = live.registry.counters.heartbeats
    wait_until(lambda: live.registry.counters.heartbeats >= beats + 3, "beats with the new token")
    agent.stop()
    assert live.registry.counters.auth_failures == {}  # never a half-written token
    shown = live.presented
    switch = shown.index(tokens.digest(second))
    assert set(shown[:switch]) == {tokens.digest(first)}
    assert set(shown[switch:]) == {tokens.digest(second)}  # from the next request on
    joined = "\n".join(live.lines)
    assert "token_reloaded reason=refreshed" in joined
    assert first not in joined and second not in joined  # the token is never logged


def test_a_missing_token_file_is_a_clear_error(live: LiveRegistry) -> None:
    live.token_file.unlink()
    agent = live.agent()
    with pytest.raises(kit.TokenMissing, match=str(live.token_file)):
        agent.token()


def test_a_refused_token_raises_unauthorized_without_showing_it(live: LiveRegistry) -> None:
    agent = live.agent()
    agent.register(CARD)
    live.token_file.write_text("x" * 43)  # token-shaped, unknown to the registry
    with pytest.raises(kit.Unauthorized) as refused:
        agent.heartbeat()
    assert refused.value.status == 401 and refused.value.error_class == "invalid_token"
    assert "invalid_token" in str(refused.value) and "x" * 43 not in str(refused.value)


def test_a_refused_register_names_the_class(live: LiveRegistry) -> None:
    agent = live.agent()
    with pytest.raises(kit.RegistrationRefused, match="400 blocked_private_url") as refused:
        agent.register(CARD, "http://10.0.0.9:8000", retry_refused=False)
    assert refused.value.error_class == "blocked_private_url"
    assert live.store.registration(ALICE).register_failure is not None


def test_a_protocol_the_controller_does_not_speak_is_refused_by_name(
        live: LiveRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit, "PROTOCOL_VERSION", 2)
    agent = live.agent()
    with pytest.raises(kit.ProtocolMismatch, match="X-Wsctl-Agent-Protocol: 2") as refused:
        agent.register(CARD)  # not retried: waiting does not make versions meet
    assert refused.value.error_class == "unsupported_protocol"
    assert agent.controller_protocol == 1
    assert live.registry.counters.auth_failures == {}
    registration = live.store.registration(ALICE)
    assert registration.registered_at is None
    assert registration.register_failure is not None  # the status will say why
    assert registration.register_failure.class_ == "unsupported_protocol"


def test_authorized_takes_only_the_controllers_credential_and_counts_the_rest(
        live: LiveRegistry) -> None:
    agent = live.agent()
    agent.register(CARD)
    assert agent.authorized(f"Bearer {A2A}")
    assert agent.authorized(f"bearer  {A2A} ")
    refused = [None, "", f"Basic {A2A}", f"Bearer {A2A}x", f"Bearer {live.token}", "Bearer"]
    assert not any(agent.authorized(header) for header in refused)
    agent.heartbeat()
    assert live.registry.counters.a2a_refused == len(refused)
    agent.heartbeat()  # each refusal in exactly one heartbeat
    assert live.registry.counters.a2a_refused == len(refused)


def test_without_the_credential_file_nobody_is_authorized(live: LiveRegistry) -> None:
    (live.token_file.parent / ".a2a_credential").unlink()
    assert not live.agent().authorized(f"Bearer {A2A}")


def too_large(port: int) -> int:
    """A request announcing a body over the limit: answered before the body is sent."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.putrequest("POST", "/")
        connection.putheader("Authorization", f"Bearer {A2A}")
        connection.putheader("Content-Length", str(kit.MAX_BODY_BYTES + 1))
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_serve_a2a_answers_message_send_for_the_controller_only(live: LiveRegistry) -> None:
    agent = live.agent(port=0)

    def respond(text: str) -> str:
        if text == "fail":
            raise kit.A2AError("the model said no")
        return f"heard: {text}"

    server = kit.serve_a2a(agent, respond, health=lambda: kit.Health.unhealthy("llm-auth: x"))
    try:
        agent.register(CARD)
        status, answer = a2a(server.port, message_send("hi", contextId="c-1"))
        assert status == 200 and answer["id"] == 7
        assert answer["result"]["parts"] == [{"kind": "text", "text": "heard: hi"}]
        assert answer["result"]["contextId"] == "c-1" and answer["result"]["role"] == "agent"
        assert a2a(server.port, message_send("fail"))[1]["error"] == {
            "code": kit.ANSWER_FAILED, "message": "the model said no"}
        assert a2a(server.port, path="/.well-known/agent-card.json") == (200, CARD)
        assert a2a(server.port, path="/healthz") == (
            200, {"status": "unhealthy", "error_detail": "llm-auth: x"})
        # what is not a message/send with text is a JSON-RPC error, not an exception
        errors = [a2a(server.port, raw=b"{nope")[1]["error"]["code"],
                  a2a(server.port, {"jsonrpc": "2.0", "id": 1, "method": "tasks/get"})[1]
                  ["error"]["code"],
                  a2a(server.port, message_send("x", parts=[]))[1]["error"]["code"]]
        assert errors == [kit.PARSE_ERROR, kit.METHOD_NOT_FOUND, kit.INVALID_PARAMS]
        assert too_large(server.port) == 413
        # anyone without the controller's credential: 401, counted in the next heartbeat
        assert a2a(server.port, message_send("hi"), credential=None)[0] == 401
        assert a2a(server.port, path="/healthz", credential=live.token)[0] == 401
        before = live.registry.counters.a2a_refused
        agent.heartbeat()
        assert live.registry.counters.a2a_refused == before + 2
    finally:
        server.shutdown()
        server.server_close()


def test_register_waits_while_the_registry_is_down_and_stop_ends_the_wait(
        live: LiveRegistry) -> None:
    agent = kit.Agent(ALICE, "http://127.0.0.1:9", token_file=str(live.token_file),
                      log=live.log)
    outcome: list[BaseException] = []

    def register() -> None:
        try:
            agent.register(CARD)
        except kit.KitError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=register)
    thread.start()
    wait_until(lambda: any("register_unreachable" in line for line in live.lines),
               "an unreachable attempt")
    agent.stop()
    thread.join(DEADLINE)
    assert len(outcome) == 1 and isinstance(outcome[0], kit.Stopped)


def test_from_environment_reads_what_the_controller_projects() -> None:
    agent = kit.Agent.from_environment({
        "WSCTL_WORKSPACE_ID": ALICE, "WSCTL_REGISTRY_URL": "http://172.18.0.1:8081/",
        "WSCTL_AGENT_PORT": "9000", "WSCTL_HEARTBEAT_SECONDS": "2.5",
        "WSCTL_TOKEN_FILE": "/t", "WSCTL_A2A_CREDENTIAL_FILE": "/c",
        "WSCTL_WORKSPACE_DIR": "/workspace"})
    assert (agent.workspace_id, agent.workspace_name, agent.registry_url) == (
        ALICE, "alice", "http://172.18.0.1:8081")
    assert (agent.port, agent.heartbeat_seconds) == (9000, 2.5)
    assert (agent.token_file, agent.a2a_credential_file, agent.workspace_dir) == (
        "/t", "/c", "/workspace")
    defaults = kit.Agent.from_environment({"WSCTL_WORKSPACE_ID": ALICE,
                                           "WSCTL_REGISTRY_URL": "http://r"})
    assert defaults.token_file == "/configs/.auth_token" and defaults.port == 8000
    with pytest.raises(kit.ConfigError, match="WSCTL_REGISTRY_URL is not set"):
        kit.Agent.from_environment({"WSCTL_WORKSPACE_ID": ALICE})
    with pytest.raises(kit.ConfigError, match="WSCTL_AGENT_PORT"):
        kit.Agent.from_environment({"WSCTL_WORKSPACE_ID": ALICE,
                                    "WSCTL_REGISTRY_URL": "http://r", "WSCTL_AGENT_PORT": "x"})


def test_health_status_is_checked() -> None:
    with pytest.raises(ValueError, match="healthy"):
        kit.Health("fine")


def test_the_kit_is_one_importable_file(tmp_path: Path) -> None:
    """As the image lays it out: /opt/wsctl/wsctl_kit.py, /opt/wsctl on PYTHONPATH."""
    shutil.copyfile(REPO / "controller" / "agent" / "kit.py", tmp_path / "wsctl_kit.py")
    done = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "import wsctl_kit; print(wsctl_kit.PROTOCOL_VERSION, sorted(sys.modules)[:0])",
         str(tmp_path)],
        capture_output=True, text=True, timeout=30, env={"PATH": os.environ.get("PATH", "")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == str(kit.PROTOCOL_VERSION)


def test_the_public_names_are_the_documented_ones() -> None:
    assert set(kit.__all__) == {
        "PROTOCOL_HEADER", "PROTOCOL_VERSION", "A2AError", "A2AServer", "Agent", "ConfigError",
        "Health", "KitError", "NotRegistered", "ProtocolMismatch", "RegistrationRefused",
        "RegistryError", "RegistryUnavailable", "Stopped", "TokenMissing", "Unauthorized",
        "serve_a2a"}
    assert all(hasattr(kit, name) for name in kit.__all__)
