"""The reference agent against a fake registry and a fake Anthropic API, all on 127.0.0.1.

The agent runs in-process (threads) for protocol checks, and as a subprocess
(``python3 -m wsctl_agent`` from a copy of the package, as in the image) for
signal handling and the crash knob. No sleeps-and-hope: every wait polls a
condition against a deadline.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controller.agent import llm, log
from controller.agent.app import Agent
from controller.agent.config import NO_LLM_CREDENTIAL, PRIVATE_URL, Config, ConfigError
from controller.agent.history import KEEP_TURNS, MAX_TURNS, History
from controller.agent.kit import RETRY_AFTER_CAP, Health
from controller.agent.registry_client import KitAgent, register_payload
from controller.agent.state import agent_card

REPO = Path(__file__).resolve().parents[2]
AGENT_DIR = REPO / "controller" / "agent"
DEADLINE = 10.0
TOKEN = "tok-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
A2A = "a2a-cccccccccccccccccccccccccccccccccccccccc"
"""The controller's credential for this container, in /configs/.a2a_credential."""
NEW_TOKEN = "tok-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
REFRESHED = "refreshed-" + "c" * 33  # the shape the controller mints (43 characters)
LLM_KEY = "sk-test-llm-secret-0123456789"

# -- fakes -------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


Responder = Callable[[Recorded], tuple[int, Any]]


@dataclass
class FakeServer:
    """A JSON HTTP server on 127.0.0.1 that records requests and answers via ``responder``."""

    responder: Responder
    requests: list[Recorded] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    httpd: ThreadingHTTPServer | None = None

    def start(self) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                rec = Recorded(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                status, answer = fake.responder(rec)
                with fake.cond:
                    fake.requests.append(rec)
                    fake.cond.notify_all()
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = _handle
            do_GET = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def matching(self, path: str) -> list[Recorded]:
        with self.cond:
            return [r for r in self.requests if r.path == path]

    def wait_for(
        self, path: str, count: int = 1, where: Callable[[Recorded], bool] = lambda r: True
    ) -> list[Recorded]:
        """Block until ``count`` requests to ``path`` satisfy ``where``; return them."""
        deadline = time.monotonic() + DEADLINE
        with self.cond:
            while True:
                hits = [r for r in self.requests if r.path == path and where(r)]
                if len(hits) >= count:
                    return hits
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(r.path, r.body) for r in self.requests]
                    raise AssertionError(f"timed out waiting for {count}x {path}; seen: {seen}")
                self.cond.wait(remaining)


def ok_registry(_: Recorded) -> tuple[int, Any]:
    return 200, {"ok": True}


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class LogCapture(io.TextIOBase):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[str] = []

    def write(self, s: str) -> int:
        with self._lock:
            self._lines.append(s)
        return len(s)

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self._lines)


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    cap = LogCapture()
    log.configure("debug", cap)
    yield cap
    log.configure("info", None)


@pytest.fixture
def registry() -> Iterator[FakeServer]:
    server = FakeServer(ok_registry).start()
    yield server
    server.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "configs" / ".auth_token"
    path.parent.mkdir()
    path.write_text(TOKEN + "\n")
    (path.parent / ".a2a_credential").write_text(A2A)
    return path


def make_config(registry_url: str, token_file: Path, **overrides: Any) -> Config:
    base = Config(
        workspace_id="default.alice",
        workspace_name="alice",
        registry_url=registry_url,
        port=0,
        bind_host="127.0.0.1",
        heartbeat_seconds=0.05,
        token_file=str(token_file),
        a2a_credential_file=str(token_file.parent / ".a2a_credential"),
        advertise_url="http://wsctl-default-alice:8000",
    )
    return replace(base, **overrides)


@pytest.fixture
def run_agent(logs: LogCapture) -> Iterator[Callable[[Config], Agent]]:
    agents: list[Agent] = []

    def start(config: Config) -> Agent:
        agent = Agent(config)
        agents.append(agent)
        agent.start()
        return agent

    yield start
    for agent in agents:
        agent.shutdown()


def http_json(url: str, body: Any = None, raw: bytes | None = None,
              credential: str | None = A2A) -> tuple[int, Any]:
    """A request to the agent, as the controller makes it (`credential` None: without)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    method = "POST" if data is not None else "GET"
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if credential is not None:
        req.add_header("Authorization", f"Bearer {credential}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def send_message(agent: Agent, text: str, path: str = "/a2a") -> Any:
    status, body = http_json(
        f"http://127.0.0.1:{agent.port}{path}",
        {
            "jsonrpc": "2.0",
            "id": "req-1",
            "method": "message/send",
            "params": {
                "message": {
                    "kind": "message",
                    "role": "user",
                    "messageId": "m-1",
                    "parts": [{"kind": "text", "text": text}],
                }
            },
        },
    )
    assert status == 200
    return body


# -- registration ------------------------------------------------------------------


def test_register_sends_bearer_token_and_agent_card(
    registry: FakeServer, token_file: Path, run_agent: Callable[[Config], Agent]
) -> None:
    run_agent(make_config(registry.url, token_file))
    (reg,) = registry.wait_for("/registry/register")
    assert reg.method == "POST"
    assert reg.headers["authorization"] == f"Bearer {TOKEN}"
    assert reg.headers["content-type"] == "application/json"
    assert reg.body["workspace_id"] == "default.alice"
    assert reg.body["url"] == "http://wsctl-default-alice:8000"
    card = reg.body["agent_card"]
    assert isinstance(card, dict)
    assert card["name"] == "alice"
    assert card["url"] == "http://wsctl-default-alice:8000"
    assert card["capabilities"] == {}
    assert isinstance(card["skills"], list) and card["skills"]
    assert {"description", "version"} <= card.keys()


def test_waits_for_missing_token_file_then_registers(
    registry: FakeServer, tmp_path: Path, logs: LogCapture, run_agent: Callable[[Config], Agent]
) -> None:
    token_file = tmp_path / ".auth_token"
    run_agent(make_config(registry.url, token_file))
    wait_until(lambda: "event=token_missing" in logs.text, "token_missing log line")
    assert registry.matching("/registry/register") == []
    token_file.write_text(f"  {TOKEN}\n\n")  # surrounding whitespace is stripped
    (reg,) = registry.wait_for("/registry/register")
    assert reg.headers["authorization"] == f"Bearer {TOKEN}"


def test_register_401_rereads_token_before_next_try(
    token_file: Path, run_agent: Callable[[Config], Agent]
) -> None:
    def responder(rec: Recorded) -> tuple[int, Any]:
        if rec.headers.get("authorization") == f"Bearer {TOKEN}":
            token_file.write_text(NEW_TOKEN)  # the controller rotated it meanwhile
            return 401, {"error": {"class": "stale_token", "message": "revoked generation"}}
        return 200, {"ok": True}

    server = FakeServer(responder).start()
    try:
        run_agent(make_config(server.url, token_file))
        server.wait_for("/registry/heartbeat")
        regs = server.matching("/registry/register")
        auths = [r.headers["authorization"] for r in regs]
        assert auths == [f"Bearer {TOKEN}", f"Bearer {NEW_TOKEN}"]
        beats = server.matching("/registry/heartbeat")
        assert all(b.headers["authorization"] == f"Bearer {NEW_TOKEN}" for b in beats)
    finally:
        server.stop()


def test_heartbeats_pick_up_a_token_refreshed_in_place_without_a_401(
    registry: FakeServer, token_file: Path, run_agent: Callable[[Config], Agent]
) -> None:
    """spec.tokenExpirationSeconds: the controller rewrites the file; the next request uses it.
    A half-written or foreign file content is ignored and the held token kept."""
    run_agent(make_config(registry.url, token_file))
    registry.wait_for("/registry/heartbeat")
    token_file.write_text(REFRESHED[:20])  # caught mid-write: not a whole token
    seen = len(registry.matching("/registry/heartbeat"))
    registry.wait_for("/registry/heartbeat", seen + 3)
    token_file.write_text(REFRESHED)
    registry.wait_for("/registry/heartbeat",
                      where=lambda r: r.headers["authorization"] == f"Bearer {REFRESHED}")
    auths = [r.headers["authorization"] for r in registry.matching("/registry/heartbeat")]
    first_new = auths.index(f"Bearer {REFRESHED}")
    assert set(auths[:first_new]) == {f"Bearer {TOKEN}"}  # never the partial content
    assert set(auths[first_new:]) == {f"Bearer {REFRESHED}"}


def test_register_retries_with_backoff_after_400_and_logs_class(
    token_file: Path, logs: LogCapture, run_agent: Callable[[Config], Agent]
) -> None:
    def responder(rec: Recorded) -> tuple[int, Any]:
        if rec.path == "/registry/register" and len(server.matching(rec.path)) < 2:
            return 400, {"error": {"class": "blocked_private_url", "message": "10.0.0.0/8"}}
        return 200, {"ok": True}

    server = FakeServer(responder).start()
    try:
        run_agent(make_config(server.url, token_file))
        server.wait_for("/registry/heartbeat")
        regs = server.matching("/registry/register")
        assert len(regs) == 3
        first_beat = server.matching("/registry/heartbeat")[0]
        assert "event=register_rejected" in logs.text
        assert "error_class=blocked_private_url" in logs.text
        # no heartbeat before the successful (third) register
        with server.cond:
            order = [r.path for r in server.requests]
        assert order.index("/registry/heartbeat") > 2
        assert first_beat.body["workspace_id"] == "default.alice"
    finally:
        server.stop()


def test_register_once_stops_after_400_and_heartbeats_healthy(
    token_file: Path, run_agent: Callable[[Config], Agent]
) -> None:
    def responder(rec: Recorded) -> tuple[int, Any]:
        if rec.path == "/registry/register":
            return 400, {"error": {"class": "blocked_private_url", "message": "private"}}
        return 200, {"ok": True}

    server = FakeServer(responder).start()
    try:
        run_agent(
            make_config(
                server.url,
                token_file,
                register_once=True,
                register_payload="private_url",
                anthropic_auth_token=LLM_KEY,
            )
        )
        beats = server.wait_for("/registry/heartbeat", count=3)
        assert len(server.matching("/registry/register")) == 1
        assert server.matching("/registry/register")[0].body["url"] == PRIVATE_URL
        assert all(b.body["status"] == "healthy" for b in beats)
        assert all(b.body["error_detail"] is None for b in beats)
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["normal", "no_url", "private_url", "bad_card"])
def test_register_payload_knobs(
    kind: str, registry: FakeServer, token_file: Path, run_agent: Callable[[Config], Agent]
) -> None:
    run_agent(make_config(registry.url, token_file, register_payload=kind))
    (reg,) = registry.wait_for("/registry/register")
    body = reg.body
    assert body["workspace_id"] == "default.alice"
    if kind == "normal":
        assert body["url"] == "http://wsctl-default-alice:8000"
        assert isinstance(body["agent_card"], dict)
    elif kind == "no_url":
        assert "url" not in body
        assert isinstance(body["agent_card"], dict)
    elif kind == "private_url":
        assert body["url"] == "http://10.11.12.13:8000"
        assert body["agent_card"]["url"] == "http://10.11.12.13:8000"
    else:
        assert body["url"] == "http://wsctl-default-alice:8000"
        assert not isinstance(body["agent_card"], dict)


def test_default_advertise_url_uses_hostname_and_port(token_file: Path) -> None:
    config = make_config("http://127.0.0.1:1", token_file, advertise_url=None, port=8000)
    import socket

    assert register_payload(config, config.claimed_url())["url"] == (
        f"http://{socket.gethostname()}:8000"
    )


# -- heartbeats --------------------------------------------------------------------


def test_heartbeat_reports_missing_llm_credential(
    registry: FakeServer, token_file: Path, run_agent: Callable[[Config], Agent]
) -> None:
    agent = run_agent(make_config(registry.url, token_file))
    beats = registry.wait_for("/registry/heartbeat", count=2)
    for beat in beats:
        assert beat.headers["authorization"] == f"Bearer {TOKEN}"
        assert beat.body["workspace_id"] == "default.alice"
        assert beat.body["status"] == "unhealthy"
        assert beat.body["error_detail"] == "llm-auth: no ANTHROPIC_AUTH_TOKEN set"
        assert beat.body["active_tasks"] == 0
        assert isinstance(beat.body["uptime_seconds"], int | float)
    assert beats[1].body["uptime_seconds"] >= beats[0].body["uptime_seconds"]
    status, health = http_json(f"http://127.0.0.1:{agent.port}/healthz")
    assert status == 200
    assert health == {"status": "unhealthy", "error_detail": NO_LLM_CREDENTIAL}


@pytest.mark.parametrize("authorization", [
    None, "Bearer wrong-credential", f"Basic {A2A}", f"Bearer {A2A}x", f"bearer {TOKEN}"])
def test_a2a_port_refuses_all_but_the_controllers_credential_and_counts_it(
    authorization: str | None, registry: FakeServer, token_file: Path,
    run_agent: Callable[[Config], Agent]
) -> None:
    agent = run_agent(make_config(registry.url, token_file))
    base = f"http://127.0.0.1:{agent.port}"
    for path, body in (("/a2a", {"jsonrpc": "2.0", "id": 1, "method": "message/send"}),
                       ("/.well-known/agent.json", None), ("/healthz", None)):
        req = urllib.request.Request(base + path, method="POST" if body else "GET",
                                     data=json.dumps(body).encode() if body else None)
        if authorization is not None:
            req.add_header("Authorization", authorization)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 401
        assert refused.value.headers["Connection"] == "close"  # an unread body is dropped
    def reported() -> int:
        return sum((r.body or {}).get("a2a_refused", 0) for r in registry.requests
                   if r.path == "/registry/heartbeat")

    deadline = time.monotonic() + DEADLINE
    while reported() < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http_json(base + "/healthz")[0] == 200  # the controller's own still passes
    registry.wait_for("/registry/heartbeat", count=len(registry.requests) + 2)
    assert reported() == 3  # each refusal in exactly one heartbeat


def test_without_the_credential_file_every_request_is_refused(
    registry: FakeServer, token_file: Path, run_agent: Callable[[Config], Agent]
) -> None:
    (token_file.parent / ".a2a_credential").unlink()
    agent = run_agent(make_config(registry.url, token_file))
    assert http_json(f"http://127.0.0.1:{agent.port}/healthz")[0] == 401


@pytest.mark.parametrize("cred", ["anthropic_auth_token", "anthropic_api_key"])
def test_heartbeat_healthy_with_llm_credential(
    cred: str, registry: FakeServer, token_file: Path, run_agent: Callable[[Config], Agent]
) -> None:
    agent = run_agent(make_config(registry.url, token_file, **{cred: LLM_KEY}))
    (beat,) = registry.wait_for("/registry/heartbeat")
    assert beat.body["status"] == "healthy"
    assert beat.body["error_detail"] is None
    assert http_json(f"http://127.0.0.1:{agent.port}/healthz")[1]["status"] == "healthy"


def test_heartbeat_401_rereads_token(
    token_file: Path, run_agent: Callable[[Config], Agent]
) -> None:
    def responder(rec: Recorded) -> tuple[int, Any]:
        if rec.path == "/registry/heartbeat" and rec.headers["authorization"].endswith(TOKEN):
            token_file.write_text(NEW_TOKEN + "\n")
            return 401, {"error": {"class": "invalid_token", "message": "no"}}
        return 200, {"ok": True}

    server = FakeServer(responder).start()
    try:
        run_agent(make_config(server.url, token_file))
        server.wait_for(
            "/registry/heartbeat", where=lambda r: r.headers["authorization"].endswith(NEW_TOKEN)
        )
        beats = server.matching("/registry/heartbeat")
        assert beats[0].headers["authorization"] == f"Bearer {TOKEN}"
        assert beats[1].headers["authorization"] == f"Bearer {NEW_TOKEN}"
    finally:
        server.stop()


def test_boot_delay_postpones_registration(
    registry: FakeServer, token_file: Path, logs: LogCapture, run_agent: Callable[[Config], Agent]
) -> None:
    started = time.monotonic()
    agent = run_agent(make_config(registry.url, token_file, boot_delay_seconds=0.5))
    # the HTTP side answers during the boot delay
    assert http_json(f"http://127.0.0.1:{agent.port}/healthz")[0] == 200
    registry.wait_for("/registry/register")
    assert time.monotonic() - started >= 0.5
    assert "event=boot_delay" in logs.text


# -- A2A and the LLM ---------------------------------------------------------------


@pytest.fixture
def anthropic() -> Iterator[FakeServer]:
    def responder(rec: Recorded) -> tuple[int, Any]:
        if rec.path != "/v1/messages":
            return 404, {"type": "error", "error": {"type": "not_found_error", "message": "x"}}
        text = rec.body["messages"][0]["content"]
        return 200, {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "text", "text": "echo: "},
                {"type": "tool_use", "id": "t", "name": "n", "input": {}},
                {"type": "text", "text": text},
            ],
        }

    server = FakeServer(responder).start()
    yield server
    server.stop()


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_message_send_calls_v1_messages_with_bearer(
    suffix: str,
    anthropic: FakeServer,
    registry: FakeServer,
    token_file: Path,
    run_agent: Callable[[Config], Agent],
) -> None:
    agent = run_agent(
        make_config(
            registry.url,
            token_file,
            anthropic_base_url=anthropic.url + suffix,
            anthropic_auth_token=LLM_KEY,
            anthropic_model="MiniMax-M3",
        )
    )
    reply = send_message(agent, "hello there")
    (call,) = anthropic.requests
    assert call.path == "/v1/messages"
    assert call.headers["authorization"] == f"Bearer {LLM_KEY}"
    assert "x-api-key" not in call.headers
    assert call.headers["anthropic-version"] == "2023-06-01"
    assert call.body == {
        "model": "MiniMax-M3",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hello there"}],
    }
    assert reply["jsonrpc"] == "2.0"
    assert reply["id"] == "req-1"
    result = reply["result"]
    assert result["kind"] == "message"
    assert result["role"] == "agent"
    assert isinstance(result["messageId"], str) and result["messageId"]
    assert result["parts"] == [{"kind": "text", "text": "echo: hello there"}]


def test_message_send_with_api_key_uses_x_api_key(
    anthropic: FakeServer,
    registry: FakeServer,
    token_file: Path,
    run_agent: Callable[[Config], Agent],
) -> None:
    agent = run_agent(
        make_config(
            registry.url, token_file, anthropic_base_url=anthropic.url, anthropic_api_key=LLM_KEY
        )
    )
    reply = send_message(agent, "hi", path="/")
    (call,) = anthropic.requests
    assert call.headers["x-api-key"] == LLM_KEY
    assert "authorization" not in call.headers
    assert call.body["model"] == "claude-sonnet-4-5"
    assert reply["result"]["parts"][0]["text"] == "echo: hi"


def test_llm_error_becomes_jsonrpc_error_without_the_key(
    registry: FakeServer,
    token_file: Path,
    logs: LogCapture,
    run_agent: Callable[[Config], Agent],
) -> None:
    def responder(rec: Recorded) -> tuple[int, Any]:
        return 401, {
            "type": "error",
            "error": {"type": "authentication_error", "message": f"bad key {LLM_KEY}"},
        }

    llm_server = FakeServer(responder).start()
    try:
        agent = run_agent(
            make_config(
                registry.url,
                token_file,
                anthropic_base_url=llm_server.url,
                anthropic_auth_token=LLM_KEY,
            )
        )
        reply = send_message(agent, "hi")
        assert "result" not in reply
        assert reply["error"]["code"] == -32000
        assert "401" in reply["error"]["message"]
        assert LLM_KEY not in json.dumps(reply)
        # an auth failure from the LLM is reported in health, truthfully
        _, health = http_json(f"http://127.0.0.1:{agent.port}/healthz")
        assert health["status"] == "unhealthy"
        assert health["error_detail"].startswith("llm-auth:")
        registry.wait_for("/registry/heartbeat", where=lambda r: r.body["status"] == "unhealthy")
        assert LLM_KEY not in logs.text
        assert TOKEN not in logs.text
    finally:
        llm_server.stop()


def test_jsonrpc_errors_and_agent_card(
    registry: FakeServer, token_file: Path, run_agent: Callable[[Config], Agent]
) -> None:
    agent = run_agent(make_config(registry.url, token_file))
    base = f"http://127.0.0.1:{agent.port}"
    status, body = http_json(base + "/a2a", raw=b"{not json")
    assert status == 200 and body["error"]["code"] == -32700 and body["id"] is None
    status, body = http_json(base + "/", {"jsonrpc": "2.0", "id": 7, "method": "tasks/get"})
    assert body["error"]["code"] == -32601 and body["id"] == 7
    status, body = http_json(
        base + "/a2a", {"jsonrpc": "2.0", "id": 8, "method": "message/send", "params": {}}
    )
    assert body["error"]["code"] == -32602
    # no credential: a clear JSON-RPC error, no outbound call
    reply = send_message(agent, "hi")
    assert reply["error"]["code"] == -32000
    assert "ANTHROPIC_AUTH_TOKEN" in reply["error"]["message"]
    status, card = http_json(base + "/.well-known/agent.json")
    assert status == 200
    assert card["name"] == "alice" and card["url"] == "http://wsctl-default-alice:8000"
    assert card["capabilities"] == {}


def test_messages_url_never_doubles_v1() -> None:
    for base in ("https://h/anthropic", "https://h/anthropic/", "https://h/anthropic/v1/"):
        assert llm.messages_url(base) == "https://h/anthropic/v1/messages"
    assert llm.messages_url("https://api.anthropic.com") == "https://api.anthropic.com/v1/messages"


# -- configuration -----------------------------------------------------------------


def test_config_from_env_defaults_and_knobs() -> None:
    env = {"WSCTL_WORKSPACE_ID": "default.alice", "WSCTL_REGISTRY_URL": "http://172.18.0.1:8081/"}
    config = Config.from_env(env)
    assert config.workspace_name == "alice"
    assert config.registry_url == "http://172.18.0.1:8081"
    assert config.port == 8000 and config.heartbeat_seconds == 5.0
    assert config.token_file == "/configs/.auth_token"
    assert config.anthropic_base_url == "https://api.anthropic.com"
    assert config.anthropic_model == "claude-sonnet-4-5"
    assert not config.has_llm_credential and not config.register_once
    assert config.register_payload == "normal" and config.exit_after_seconds is None
    tuned = Config.from_env(
        {
            **env,
            "AGENT_REGISTER_PAYLOAD": "bad_card",
            "AGENT_REGISTER_ONCE": "1",
            "AGENT_EXIT_AFTER_SECONDS": "2.5",
            "ANTHROPIC_AUTH_TOKEN": LLM_KEY,
        }
    )
    assert tuned.register_payload == "bad_card" and tuned.register_once
    assert tuned.exit_after_seconds == 2.5 and tuned.has_llm_credential
    with pytest.raises(ConfigError, match="AGENT_REGISTER_PAYLOAD"):
        Config.from_env({**env, "AGENT_REGISTER_PAYLOAD": "weird"})
    with pytest.raises(ConfigError, match="WSCTL_WORKSPACE_ID"):
        Config.from_env({"WSCTL_REGISTRY_URL": "http://x"})


# -- as a process (like in the image) ----------------------------------------------


@pytest.fixture
def standalone_pythonpath(tmp_path: Path) -> Path:
    """A copy of the agent as ``wsctl_agent`` (as the Dockerfile lays it out)."""
    root = tmp_path / "opt"
    shutil.copytree(AGENT_DIR, root / "wsctl_agent", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def spawn_agent(
    pythonpath: Path, registry_url: str, token_file: Path, **extra: str
) -> subprocess.Popen[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(pythonpath),
        "PYTHONUNBUFFERED": "1",
        "WSCTL_WORKSPACE_ID": "default.alice",
        "WSCTL_REGISTRY_URL": registry_url,
        "WSCTL_AGENT_PORT": "0",
        "AGENT_BIND_HOST": "127.0.0.1",
        "WSCTL_HEARTBEAT_SECONDS": "0.1",
        "WSCTL_TOKEN_FILE": str(token_file),
        "AGENT_ADVERTISE_URL": "http://wsctl-default-alice:8000",
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, "-B", "-m", "wsctl_agent"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(pythonpath),
    )


def test_process_exits_zero_on_sigterm_and_never_logs_secrets(
    standalone_pythonpath: Path, registry: FakeServer, token_file: Path
) -> None:
    proc = spawn_agent(
        standalone_pythonpath, registry.url, token_file, ANTHROPIC_AUTH_TOKEN=LLM_KEY
    )
    try:
        registry.wait_for("/registry/heartbeat")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=5)
        assert code == 0
        assert time.monotonic() - sent < 3.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    out = proc.stdout.read()
    lines = out.splitlines()
    assert any("event=start" in ln for ln in lines)
    assert any("event=register_ok" in ln for ln in lines)
    assert any("event=signal" in ln and "SIGTERM" in ln for ln in lines)
    assert LLM_KEY not in out and TOKEN not in out


def test_process_exit_after_knob_exits_3(
    standalone_pythonpath: Path, registry: FakeServer, token_file: Path
) -> None:
    proc = spawn_agent(
        standalone_pythonpath, registry.url, token_file, AGENT_EXIT_AFTER_SECONDS="0.3"
    )
    try:
        assert proc.wait(timeout=10) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_process_rejects_bad_config_with_exit_2(
    standalone_pythonpath: Path, tmp_path: Path
) -> None:
    proc = spawn_agent(
        standalone_pythonpath,
        "http://127.0.0.1:9",
        tmp_path / "t",
        AGENT_REGISTER_PAYLOAD="nonsense",
    )
    try:
        assert proc.wait(timeout=10) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    assert "event=config_invalid" in proc.stdout.read()


def test_agent_package_is_stdlib_only() -> None:
    """Nothing outside the package or the standard library is imported."""
    import ast

    stdlib = set(sys.stdlib_module_names)
    for path in AGENT_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 0:
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in stdlib or top == "__future__", f"{path.name} imports {name}"


# -- 429 / 503: retry later, honouring Retry-After -------------------------------


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are recorded (no real sleeping)."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.waits: list[float | None] = []
        self.stop_after = stop_after

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if self.stop_after is not None and len(self.waits) >= self.stop_after:
            self.set()
        return self.is_set()


def limited_registry(answers: list[tuple[int, str | None]]) -> tuple[ThreadingHTTPServer, str]:
    """Answers register/heartbeat with `answers` in turn (status, Retry-After), then 200."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, retry_after = answers.pop(0) if answers else (200, None)
            cls = {429: "rate_limited", 503: "store_unavailable"}.get(status)
            data = json.dumps({"ok": True} if cls is None else
                              {"error": {"class": cls, "message": "retry later"}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def test_register_honours_retry_after_on_429_and_503_bounded(token_file: Path) -> None:
    answers: list[tuple[int, str | None]] = [
        (429, "7"), (503, "5"), (429, "86400"), (429, "soon"), (429, None)]
    httpd, url = limited_registry(answers)
    try:
        stop = RecordingStop()
        config = make_config(url, token_file)
        agent = KitAgent(config, stop)
        assert agent.wait_for_token() == TOKEN
        agent.register(agent_card(config, "http://wsctl-default-alice:8000"))
    finally:
        httpd.shutdown()
        httpd.server_close()
    # Retry-After when named (never below the backoff), capped; else the backoff.
    assert stop.waits == [7.0, 5.0, RETRY_AFTER_CAP, 4.0, 8.0]


def test_heartbeat_waits_retry_after_then_resumes(token_file: Path) -> None:
    httpd, url = limited_registry([(429, "12"), (503, "1")])
    try:
        stop = RecordingStop(stop_after=3)
        config = make_config(url, token_file, heartbeat_seconds=2.0)
        agent = KitAgent(config, stop)
        agent.wait_for_token()
        agent.run_heartbeats(Health)  # returns once stopping
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert stop.waits == [12.0, 2.0, 2.0]  # 429: Retry-After; 503 "1" < the interval: 2 s


def test_history_in_the_workspace_dir_is_sent_after_a_restart(
    anthropic: FakeServer,
    registry: FakeServer,
    token_file: Path,
    tmp_path: Path,
    run_agent: Callable[[Config], Agent],
) -> None:
    """Issue 14: the conversation lives in the storage volume, so an agent restarted
    mid-conversation sends its earlier turns with the next request."""
    config = make_config(registry.url, token_file, anthropic_base_url=anthropic.url,
                         anthropic_auth_token=LLM_KEY, workspace_dir=str(tmp_path / "ws"))
    first = run_agent(config)
    send_message(first, "my name is Ada")
    first.shutdown()
    second = run_agent(config)  # a new process on the same volume
    send_message(second, "what is my name?")
    assert [c.body["messages"] for c in anthropic.requests] == [
        [{"role": "user", "content": "my name is Ada"}],
        [{"role": "user", "content": "my name is Ada"},
         {"role": "assistant", "content": "echo: my name is Ada"},
         {"role": "user", "content": "what is my name?"}],
    ]
    lines = (tmp_path / "ws" / ".wsctl" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_history_is_bounded_and_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / ".wsctl" / "history.jsonl"
    history = History(str(tmp_path))
    for i in range(KEEP_TURNS + 1):
        history.record(f"q{i}", f"a{i}")
    # Past KEEP_TURNS the file is compacted to the newest MAX_TURNS turns.
    assert len(path.read_text().splitlines()) == 2 * MAX_TURNS
    with path.open("a") as out:
        out.write('{"role": "user", "content": "torn')  # the container died mid-write
    sent = History(str(tmp_path)).messages("next")
    assert len(sent) == 2 * MAX_TURNS + 1 and sent[-1] == {"role": "user", "content": "next"}
    assert sent[0] == {"role": "user", "content": f"q{KEEP_TURNS + 1 - MAX_TURNS}"}
    assert History(None).messages("x") == [{"role": "user", "content": "x"}]
    History(None).record("x", "y")  # without a workspace dir nothing is written
