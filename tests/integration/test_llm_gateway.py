"""The LLM gateway in process, on 127.0.0.1: the official `anthropic` and `openai` SDKs
as clients, configured as a gateway-mode container is (base URL `.../llm/<provider>`,
`.../llm/openai/v1` for openai; the workspace credential as their key), against a
fake provider that checks what the real one checks: the real key in the header the
provider expects, the exact path (one /v1), `anthropic-version`.

No Docker, no PostgreSQL: the gateway's store-side dependencies are in-memory
implementations of its Protocols. Every test also checks that no log line of the
controller or aiohttp holds a credential or a key (`_no_secret_in_logs`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from yarl import URL

from controller.api.llm_gateway import LlmCredential, LlmGateway
from controller.api.llm_metrics import GatewayMetrics
from controller.api.registry import FailedAuthLimiter
from controller.core import tokens
from controller.core.errors import SecretUnreadableError
from controller.core.usage import Usage
from tests.exposition import parse

ALICE, MINI, OAI = "default.alice", "default.mini", "default.oai"
REAL_KEYS = {ALICE: "sk-ant-REAL-alice-0123456789", MINI: "mm-REAL-mini-0123456789",
             OAI: "sk-openai-REAL-oai-0123456789"}

UNREADABLE = "<stored under another secret key>"
SDK_TIMEOUT = 10.0
"""The SDK clients' timeout: a gateway that holds an answer back fails a test, not
hangs it (the SDKs' default is 600 s)."""

ANTHROPIC_USAGE = {"input_tokens": 21, "output_tokens": 13, "cache_creation_input_tokens": 2,
                   "cache_read_input_tokens": 4}
STREAM_USAGE = Usage(input=30, output=17, cache_creation=0, cache_read=5)
OPENAI_USAGE = {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49,
                "prompt_tokens_details": {"cached_tokens": 8}}


@dataclass
class Seen:
    path: str
    query: str
    headers: dict[str, list[str]]
    body_bytes: int

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass
class FakeProvider:
    """Anthropic at `/v1/messages` (x-api-key), MiniMax at `/anthropic/v1/messages`
    (Bearer), OpenAI at `/v1/chat/completions` (Bearer). Anything else is a 404, so
    `/v1/v1/...` fails as it would at the provider."""

    keys: dict[str, str]
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    pause_streams: bool = False
    finished_streams: int = 0
    hang: bool = False
    break_stream: bool = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    @staticmethod
    def _anthropic_error(status: int, kind: str) -> web.Response:
        return web.json_response({"type": "error", "error": {"type": kind, "message": kind}},
                                 status=status)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        self.seen.append(Seen(request.path, request.rel_url.raw_query_string, headers,
                             len(body)))
        if self.hang:
            await self.release.wait()
        if request.path == "/echo/v1/headers":
            return self._echo(request)
        if request.path == "/v1/messages":
            return await self._anthropic(request, body, x_api_key=self.keys[ALICE])
        if request.path == "/anthropic/v1/messages":
            return await self._anthropic(request, body, bearer=self.keys[MINI])
        if request.path == "/v1/chat/completions":
            if request.headers.get("Authorization") != f"Bearer {self.keys[OAI]}":
                return web.json_response({"error": {"message": "Incorrect API key provided",
                                                    "type": "invalid_request_error",
                                                    "param": None, "code": "invalid_api_key"}},
                                         status=401)
            return await self._openai(request, json.loads(body))
        return self._anthropic_error(404, "not_found_error")

    def _echo(self, request: web.Request) -> web.Response:
        """Answers with hop-by-hop headers of its own (that must not reach the client)."""
        response = web.json_response({"ok": True})
        response.headers.update({"Keep-Alive": "timeout=99", "Proxy-Authenticate": "Basic",
                                 "Trailer": "X-Checksum", "Upgrade": "h2c",
                                 "Proxy-Foo": "1", "request-id": "req_123",
                                 "anthropic-ratelimit-tokens-remaining": "999",
                                 "Set-Cookie": "__cf_bm=abc; Path=/"})
        return response

    async def _anthropic(self, request: web.Request, body: bytes, *,
                         x_api_key: str | None = None,
                         bearer: str | None = None) -> web.StreamResponse:
        if x_api_key is not None and (request.headers.get("x-api-key") != x_api_key
                                      or "Authorization" in request.headers):
            return self._anthropic_error(401, "authentication_error")
        if bearer is not None and (request.headers.get("Authorization") != f"Bearer {bearer}"
                                   or "x-api-key" in request.headers):
            return self._anthropic_error(401, "authentication_error")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", request.headers.get("anthropic-version", "")):
            return self._anthropic_error(400, "invalid_request_error")
        payload = json.loads(body)
        if not payload.get("stream"):
            return web.json_response({
                "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [{"type": "text", "text": "Hello from upstream"}],
                "stop_reason": "end_turn", "stop_sequence": None, "usage": ANTHROPIC_USAGE})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        await event("message_start", {"type": "message_start", "message": {
            "id": "msg_02", "type": "message", "role": "assistant", "content": [],
            "model": "claude-x", "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 30, "output_tokens": 1, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 5}}})
        await event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})
        await event("ping", {"type": "ping"})
        await event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": "Hel"}})
        if self.pause_streams:
            await self.release.wait()
        if self.break_stream:
            assert request.transport is not None
            request.transport.close()
            return response
        await event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": "lo ✓"}})
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        await event("message_delta", {"type": "message_delta",
                                       "delta": {"stop_reason": "end_turn",
                                                 "stop_sequence": None},
                                       "usage": {"output_tokens": 17}})
        await event("message_stop", {"type": "message_stop"})
        self.finished_streams += 1
        await response.write_eof()
        return response

    async def _openai(self, request: web.Request, payload: dict[str, Any]
                      ) -> web.StreamResponse:
        base = {"id": "chatcmpl-1", "created": 1700000000, "model": "gpt-x"}
        if not payload.get("stream"):
            return web.json_response({**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": "Hi there"},
                "finish_reason": "stop"}], "usage": OPENAI_USAGE})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for delta in ({"role": "assistant", "content": ""}, {"content": "Hi"},
                      {"content": " there"}):
            chunk = {**base, "object": "chat.completion.chunk", "usage": None,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if self.pause_streams and delta.get("content") == "Hi":
                await self.release.wait()
        if payload.get("stream_options", {}).get("include_usage"):
            final = {**base, "object": "chat.completion.chunk", "choices": [],
                     "usage": OPENAI_USAGE}
            await response.write(f"data: {json.dumps(final)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        self.finished_streams += 1
        await response.write_eof()
        return response


@dataclass
class Recorded:
    workspace_id: str
    provider: str
    usage: Usage
    status: int
    error_class: str | None


@dataclass
class Memory:
    """The gateway's four dependencies, in memory (the store implements them later)."""

    rows: dict[str, LlmCredential] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    recorded: list[Recorded] = field(default_factory=list)
    over_budget: set[str] = field(default_factory=set)
    lookups: int = 0

    async def find_llm_credential(self, credential_hash: str) -> LlmCredential | None:
        self.lookups += 1
        return self.rows.get(credential_hash)

    async def key_for(self, workspace_id: str) -> str | None:
        if self.keys.get(workspace_id) == UNREADABLE:
            raise SecretUnreadableError(f"secret of {workspace_id} cannot be decrypted")
        return self.keys.get(workspace_id)

    async def record(self, workspace_id: str, provider: str, usage: Usage, status: int,
                     error_class: str | None, seconds: float) -> None:
        assert seconds >= 0
        self.recorded.append(Recorded(workspace_id, provider, usage, status, error_class))

    async def allowed(self, workspace_id: str) -> bool:
        return workspace_id not in self.over_budget


@dataclass
class Env:
    gateway_url: str
    upstream_url: str
    upstream: FakeProvider
    memory: Memory
    gateway: LlmGateway
    metrics: GatewayMetrics
    credentials: dict[str, str]
    """workspace -> its live credential; `stale` -> alice's revoked one."""
    clients: list[AsyncAnthropic | AsyncOpenAI] = field(default_factory=list)

    def anthropic(self, credential: str | None = None) -> AsyncAnthropic:
        """As an anthropic container is configured: ANTHROPIC_API_KEY, so x-api-key."""
        client = AsyncAnthropic(api_key=credential or self.credentials[ALICE],
                                          base_url=f"{self.gateway_url}/llm/anthropic",
                                          max_retries=0, timeout=SDK_TIMEOUT)
        self.clients.append(client)
        return client

    def minimax(self) -> AsyncAnthropic:
        """As a minimax container is configured: ANTHROPIC_AUTH_TOKEN, so Bearer."""
        client = AsyncAnthropic(auth_token=self.credentials[MINI],
                                          base_url=f"{self.gateway_url}/llm/minimax",
                                          max_retries=0, timeout=SDK_TIMEOUT)
        self.clients.append(client)
        return client

    def openai(self, credential: str | None = None) -> AsyncOpenAI:
        client = AsyncOpenAI(api_key=credential or self.credentials[OAI],
                                    base_url=f"{self.gateway_url}/llm/openai/v1",
                                    max_retries=0, timeout=SDK_TIMEOUT)
        self.clients.append(client)
        return client

    def secrets(self) -> list[str]:
        return [*self.credentials.values(), *REAL_KEYS.values(), *self.memory.keys.values()]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _start(upstream: FakeProvider, memory: Memory, **gateway_options: Any
                 ) -> AsyncIterator[Env]:
    async with TestServer(upstream.app(), host="127.0.0.1") as up:
        base = f"http://127.0.0.1:{up.port}"
        credentials = {ws: tokens.mint() for ws in (ALICE, MINI, OAI)}
        credentials["stale"] = tokens.mint()
        memory.rows.update({
            tokens.digest(credentials[ALICE]): LlmCredential(ALICE, 2, "anthropic", base),
            # The seed case: a minimax baseURL with a trailing /v1/.
            tokens.digest(credentials[MINI]): LlmCredential(MINI, 1, "minimax",
                                                            f"{base}/anthropic/v1/"),
            tokens.digest(credentials[OAI]): LlmCredential(OAI, 1, "openai", f"{base}/v1"),
            tokens.digest(credentials["stale"]): LlmCredential(
                ALICE, 1, "anthropic", base, revoked_at=datetime.now(UTC)),
        })
        memory.keys.update(REAL_KEYS)
        metrics = GatewayMetrics()
        gateway = LlmGateway(memory, memory, memory, memory, metrics=metrics,
                             **gateway_options)
        app = web.Application()
        app.add_routes(gateway.routes())
        clients: list[AsyncAnthropic | AsyncOpenAI] = []
        try:
            async with TestServer(app, host="127.0.0.1") as gw:
                try:
                    yield Env(f"http://127.0.0.1:{gw.port}", base, upstream, memory, gateway,
                              metrics, credentials, clients)
                finally:  # a failed test must not leave a handler waiting on the upstream
                    upstream.release.set()
                    for client in clients:
                        await client.close()
        finally:
            await gateway.close()


@pytest.fixture
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL",
                 "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def upstream() -> FakeProvider:
    return FakeProvider(keys=dict(REAL_KEYS))


@pytest.fixture
async def env(upstream: FakeProvider, _clean_environment: None) -> AsyncIterator[Env]:
    async for started in _start(upstream, Memory()):
        yield started


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Every test: no record of the controller or aiohttp holds a credential or a key.
    A test that makes more secrets appends them to the yielded list."""
    caplog.set_level(logging.DEBUG)
    extra: list[str] = []
    yield extra
    env_secrets = [*REAL_KEYS.values(), *extra]
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    assert any(r.name.startswith("wsctl") for r in records)  # the check sees the lines
    for record in records:
        if not record.name.startswith(("wsctl", "aiohttp")):
            continue  # the SDK clients' own debug lines are the client's business
        text = record.getMessage() + (record.exc_text or "")
        for secret in env_secrets:
            assert secret not in text, f"a secret in a {record.name} log line"


@pytest.fixture
def secrets_in(env: Env, _no_secret_in_logs: list[str]) -> None:
    _no_secret_in_logs.extend(env.credentials.values())


async def test_anthropic_non_streamed_call(env: Env, secrets_in: None) -> None:
    reply = await env.anthropic().messages.create(
        model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    assert reply.content[0].type == "text" and reply.content[0].text == "Hello from upstream"
    assert reply.usage.input_tokens == 21
    [seen] = env.upstream.seen
    assert seen.path == "/v1/messages"
    assert seen.header("x-api-key") == REAL_KEYS[ALICE]
    assert seen.header("authorization") is None
    assert seen.header("anthropic-version") == anthropic._constants.ANTHROPIC_API_VERSION
    assert seen.header("anthropic-beta") == "prompt-caching-2024-07-31"
    assert seen.header("content-length") == str(seen.body_bytes)
    assert seen.header("transfer-encoding") is None
    assert not any(env.credentials[ALICE] in v for vs in seen.headers.values() for v in vs)
    assert env.memory.recorded == [Recorded(ALICE, "anthropic", Usage(21, 13, 2, 4), 200, None)]


async def test_minimax_seed_stream_arrives_before_the_upstream_finishes(
        env: Env, secrets_in: None) -> None:
    """The seed case (minimax, baseURL .../anthropic/v1/), streamed: the first events
    reach the SDK while the upstream waits, mid-stream, for the test to see them."""
    env.upstream.pause_streams = True
    client = env.minimax()
    stream = await client.messages.create(
        model="MiniMax-M2", max_tokens=100, stream=True,
        messages=[{"role": "user", "content": "hi"}])
    events = stream.__aiter__()
    first = await asyncio.wait_for(events.__anext__(), 5)
    assert first.type == "message_start"
    assert env.upstream.finished_streams == 0
    env.upstream.release.set()
    rest = [event async for event in events]
    assert env.upstream.finished_streams == 1
    text = "".join(e.delta.text for e in rest
                   if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == "Hello ✓"
    [seen] = env.upstream.seen
    assert seen.path == "/anthropic/v1/messages"
    assert seen.header("authorization") == f"Bearer {REAL_KEYS[MINI]}"
    assert seen.header("x-api-key") is None
    assert env.memory.recorded == [Recorded(MINI, "minimax", STREAM_USAGE, 200, None)]


async def test_anthropic_stream_helper_usage(env: Env, secrets_in: None) -> None:
    async with env.anthropic().messages.stream(
            model="claude-x", max_tokens=100,
            messages=[{"role": "user", "content": "hi"}]) as stream:
        final = await stream.get_final_message()
    assert final.usage.output_tokens == 17
    assert env.memory.recorded[-1].usage == STREAM_USAGE


async def test_openai_calls(env: Env, secrets_in: None) -> None:
    client = env.openai()
    reply = await client.chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"OpenAI-Beta": "assistants=v2"})
    assert reply.choices[0].message.content == "Hi there"
    seen = env.upstream.seen[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.header("authorization") == f"Bearer {REAL_KEYS[OAI]}"
    assert seen.header("openai-beta") == "assistants=v2"
    assert env.memory.recorded[-1] == Recorded(OAI, "openai", Usage(32, 9, 0, 8), 200, None)

    env.upstream.pause_streams = True
    stream = await client.chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    chunks = stream.__aiter__()
    first = await asyncio.wait_for(chunks.__anext__(), 5)
    second = await asyncio.wait_for(chunks.__anext__(), 5)
    assert first.choices[0].delta.role == "assistant" and second.choices[0].delta.content == "Hi"
    assert env.upstream.finished_streams == 0
    env.upstream.release.set()
    rest = [chunk async for chunk in chunks]
    assert rest[-1].usage is not None and rest[-1].usage.prompt_tokens == 40
    assert env.memory.recorded[-1] == Recorded(OAI, "openai", Usage(32, 9, 0, 8), 200, None)


async def test_an_openai_stream_that_does_not_ask_for_usage_is_counted_anyway(
        env: Env, secrets_in: None) -> None:
    """Else an agent could stream past its budget: the gateway asks for the usage."""
    stream = await env.openai().chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "hi"}], stream=True)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hi there"
    assert chunks[-1].usage is not None  # the provider was asked, so it said
    assert env.memory.recorded[-1] == Recorded(OAI, "openai", Usage(32, 9, 0, 8), 200, None)
    seen = env.upstream.seen[-1]
    assert seen.header("content-length") == str(seen.body_bytes)  # re-counted


async def test_unknown_and_revoked_credentials_are_authentication_errors(
        env: Env, secrets_in: None, _no_secret_in_logs: list[str]) -> None:
    unknown = tokens.mint()
    _no_secret_in_logs.append(unknown)
    for credential in (unknown, env.credentials["stale"]):
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await env.anthropic(credential).messages.create(
                model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        assert caught.value.response.headers["x-wsctl-error-class"] in (
            "invalid_credential", "stale_credential")
        assert credential not in caught.value.message
    with pytest.raises(openai.AuthenticationError) as oai:
        await env.openai(unknown).chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": "x"}])
    assert oai.value.code == "invalid_credential"
    assert env.upstream.seen == []
    assert env.memory.recorded == []


async def test_a_credential_on_another_providers_path_is_refused(
        env: Env, secrets_in: None) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await env.openai(env.credentials[ALICE]).chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "wrong_provider"
    assert env.upstream.seen == []


async def test_over_budget_is_a_rate_limit_error(env: Env, secrets_in: None) -> None:
    env.memory.over_budget.add(ALICE)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await env.anthropic().messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.response.json()["error"]["type"] == "rate_limit_error"
    assert env.upstream.seen == []
    assert env.memory.recorded == [Recorded(ALICE, "anthropic", Usage(), 429,
                                            "budget_exhausted")]


async def test_a_rotated_key_takes_effect_on_the_next_call(env: Env, secrets_in: None,
                                                           _no_secret_in_logs: list[str]
                                                           ) -> None:
    client = env.anthropic()
    await client.messages.create(model="claude-x", max_tokens=10,
                                 messages=[{"role": "user", "content": "x"}])
    rotated = "sk-ant-REAL-rotated-9876543210"
    _no_secret_in_logs.append(rotated)
    env.memory.keys[ALICE] = rotated
    env.upstream.keys[ALICE] = rotated
    await client.messages.create(model="claude-x", max_tokens=10,
                                 messages=[{"role": "user", "content": "x"}])
    assert [s.header("x-api-key") for s in env.upstream.seen] == [REAL_KEYS[ALICE], rotated]


async def test_a_workspace_without_a_key(env: Env, secrets_in: None) -> None:
    del env.memory.keys[ALICE]
    with pytest.raises(anthropic.PermissionDeniedError):
        await env.anthropic().messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert env.upstream.seen == []


async def test_a_key_that_does_not_decrypt_is_a_clear_refusal(env: Env,
                                                              secrets_in: None) -> None:
    env.memory.keys[ALICE] = UNREADABLE
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        await env.anthropic().messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 403
    assert "wsctl describe" in str(refused.value.body)
    assert env.upstream.seen == []
    assert env.memory.recorded[-1].error_class == "provider_key_unreadable"


async def test_the_providers_own_error_passes_through(env: Env, secrets_in: None) -> None:
    """The real key refused by the provider: its own 401, classed upstream_auth."""
    env.memory.keys[ALICE] = "sk-ant-wrong-key-000000"
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await env.anthropic().messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert "x-wsctl-error-class" not in caught.value.response.headers
    assert env.memory.recorded[-1].error_class == "upstream_auth"


async def test_upstream_unreachable_and_timeout(upstream: FakeProvider,
                                                _clean_environment: None,
                                                _no_secret_in_logs: list[str]) -> None:
    memory = Memory()
    async for env in _start(upstream, memory, idle_timeout=0.5):
        _no_secret_in_logs.extend(env.credentials.values())
        down = f"http://127.0.0.1:{_closed_port()}"
        for digest, row in list(memory.rows.items()):
            memory.rows[digest] = LlmCredential(row.workspace_id, row.generation, row.provider,
                                                down + ("/v1" if row.provider == "openai"
                                                        else ""))
        with pytest.raises(anthropic.InternalServerError) as caught:
            await env.anthropic().messages.create(
                model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == 502
        assert caught.value.response.json() == {"type": "error", "error": {
            "type": "api_error", "message": "wsctl LLM gateway: the provider could not be "
            "reached (upstream_unreachable)"}}
        with pytest.raises(openai.InternalServerError) as oai:
            await env.openai().chat.completions.create(
                model="gpt-x", messages=[{"role": "user", "content": "x"}])
        assert oai.value.status_code == 502 and oai.value.code == "upstream_unreachable"

        for digest, row in list(memory.rows.items()):
            memory.rows[digest] = LlmCredential(row.workspace_id, row.generation, row.provider,
                                                env.upstream_url)
        upstream.hang = True
        with pytest.raises(anthropic.InternalServerError) as slow:
            await env.anthropic().messages.create(
                model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        assert slow.value.status_code == 504
        assert [r.error_class for r in memory.recorded] == ["upstream_unreachable",
                                                            "upstream_unreachable",
                                                            "upstream_timeout"]


async def test_a_stream_the_upstream_breaks_off_is_cut_at_the_client(
        env: Env, secrets_in: None) -> None:
    """A truncated answer must not look complete: the client's connection is cut."""
    env.upstream.break_stream = True
    headers = {"x-api-key": env.credentials[ALICE], "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as session, \
            session.post(f"{env.gateway_url}/llm/anthropic/v1/messages",
                         json={"stream": True}, headers=headers) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert env.memory.recorded[-1].error_class == "upstream_broken"
    assert env.memory.recorded[-1].usage.input == 30  # what was seen is still counted


async def test_hop_by_hop_headers_do_not_pass(env: Env, secrets_in: None) -> None:
    headers = {"x-api-key": env.credentials[ALICE], "Connection": "keep-alive, X-Hop",
               "X-Hop": "1", "Keep-Alive": "timeout=5", "Proxy-Authorization": "Basic eA==",
               "TE": "trailers", "Trailer": "X-Checksum", "Upgrade": "websocket-not",
               "X-End-To-End": "kept", "anthropic-version": "2023-06-01",
               "Cookie": "session=from-client"}
    # The echo route lives under a base URL with a path: give alice one.
    digest = tokens.digest(env.credentials[ALICE])
    env.memory.rows[digest] = LlmCredential(ALICE, 2, "anthropic", f"{env.upstream_url}/echo")
    async with aiohttp.ClientSession() as session, \
            session.get(f"{env.gateway_url}/llm/anthropic/v1/headers?a=1&b=%20",
                        headers=headers) as response:
        assert response.status == 200
        got = {k.lower() for k in response.headers}
    [seen] = env.upstream.seen
    assert seen.path == "/echo/v1/headers" and seen.query == "a=1&b=%20"
    for hop in ("x-hop", "keep-alive", "proxy-authorization", "te", "trailer", "upgrade"):
        assert hop not in seen.headers, hop
    assert seen.header("connection") in (None, "keep-alive")  # aiohttp's own, not the client's
    assert seen.header("x-end-to-end") == "kept"
    assert seen.header("cookie") == "session=from-client"
    assert seen.header("x-api-key") == REAL_KEYS[ALICE]
    assert seen.header("host") == f"127.0.0.1:{env.upstream_url.rsplit(':', 1)[1]}"
    for hop in ("keep-alive", "proxy-authenticate", "trailer", "upgrade", "proxy-foo"):
        assert hop not in got, hop
    assert {"request-id", "anthropic-ratelimit-tokens-remaining", "set-cookie"} <= got


async def test_no_cookie_jar_between_calls(env: Env, secrets_in: None) -> None:
    """The echo answer sets a cookie; the shared session must not send it on (to this
    workspace or another). A host name, not an address: aiohttp's jar ignores cookies
    of IP hosts."""
    port = env.upstream_url.rsplit(":", 1)[1]
    digest = tokens.digest(env.credentials[ALICE])
    env.memory.rows[digest] = LlmCredential(ALICE, 2, "anthropic",
                                            f"http://localhost:{port}/echo")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        for _ in range(2):
            async with session.get(f"{env.gateway_url}/llm/anthropic/v1/headers",
                                   headers={"x-api-key": env.credentials[ALICE]}) as response:
                assert response.status == 200
                assert "set-cookie" in {k.lower() for k in response.headers}
    assert [s.header("cookie") for s in env.upstream.seen] == [None, None]


async def test_request_too_large(upstream: FakeProvider, _clean_environment: None,
                                 _no_secret_in_logs: list[str]) -> None:
    async for env in _start(upstream, Memory(), max_request_bytes=64 * 1024):
        _no_secret_in_logs.extend(env.credentials.values())
        big = "x" * (80 * 1024)
        with pytest.raises(anthropic.APIStatusError) as caught:
            await env.anthropic().messages.create(
                model="claude-x", max_tokens=10, messages=[{"role": "user", "content": big}])
        assert caught.value.status_code == 413
        # Without a declared length (chunked): counted as it streams.

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"y" * 8192

        async with aiohttp.ClientSession() as session, \
                session.post(f"{env.gateway_url}/llm/anthropic/v1/messages", data=chunks(),
                             headers={"x-api-key": env.credentials[ALICE],
                                      "anthropic-version": "2023-06-01"}) as response:
            assert response.status == 413
            body = await response.json()
            assert body["error"]["type"] == "request_too_large"
        assert all(s.body_bytes <= 64 * 1024 for s in env.upstream.seen)
        assert not any(s.path == "/v1/messages" and s.body_bytes > 0 for s in env.upstream.seen)


async def test_a_declared_length_over_the_limit_is_refused_before_the_body(
        upstream: FakeProvider, _clean_environment: None,
        _no_secret_in_logs: list[str]) -> None:
    """A client declaring 100 MB gets 413 at once: the gateway does not wait for (or
    read) a body it would refuse."""
    async for env in _start(upstream, Memory(), max_request_bytes=64 * 1024):
        _no_secret_in_logs.extend(env.credentials.values())
        host, port = env.gateway_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write((f"POST /llm/anthropic/v1/messages HTTP/1.1\r\nHost: {host}\r\n"
                          f"x-api-key: {env.credentials[ALICE]}\r\n"
                          "Content-Type: application/json\r\n"
                          "Content-Length: 100000000\r\n\r\n{").encode())
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 5)
        finally:
            writer.close()
        assert status_line.startswith(b"HTTP/1.1 413 ")
        assert env.upstream.seen == []


async def test_failed_credential_checks_are_rate_limited_per_source(
        upstream: FakeProvider, _clean_environment: None,
        _no_secret_in_logs: list[str]) -> None:
    now = [0.0]
    limiter = FailedAuthLimiter(burst=2, refill_per_second=0.5, clock=lambda: now[0])
    memory = Memory()
    async for env in _start(upstream, memory, limiter=limiter):
        _no_secret_in_logs.extend(env.credentials.values())
        async with aiohttp.ClientSession() as session:  # no credential guesses nothing
            for _ in range(5):  # e.g. Claude Code's warm-up, once per `claude -p`
                async with session.head(f"{env.gateway_url}/llm/anthropic/") as answer:
                    assert answer.status == 401
        bad = env.anthropic("not-a-credential-000000")
        for _ in range(2):
            with pytest.raises(anthropic.AuthenticationError):
                await bad.messages.create(model="m", max_tokens=1,
                                          messages=[{"role": "user", "content": "x"}])
        lookups = memory.lookups
        with pytest.raises(anthropic.RateLimitError) as caught:  # even a good credential now
            await env.anthropic().messages.create(model="m", max_tokens=1,
                                                  messages=[{"role": "user", "content": "x"}])
        assert caught.value.response.headers["Retry-After"] == "2"
        assert memory.lookups == lookups  # refused before any lookup
        now[0] += 2.0
        await env.anthropic().messages.create(model="m", max_tokens=1,
                                              messages=[{"role": "user", "content": "x"}])


async def test_paths_outside_the_api_are_not_forwarded(env: Env, secrets_in: None) -> None:
    """Nothing reaches the provider outside its API: the openai gateway base ends in
    /v1, providers are the table's, and dot segments (sent raw, not resolved by the
    client) cannot climb out of the base URL's path (minimax's is /anthropic/v1/)."""
    async with aiohttp.ClientSession() as session:
        for path, credential in (
                ("/llm/openai/chat/completions", env.credentials[OAI]),
                ("/llm/nosuch/v1/messages", env.credentials[ALICE]),
                ("/llm/minimax/v1/%2e%2e/%2e%2e/admin", env.credentials[MINI]),
                ("/llm/minimax/v1/../../admin", env.credentials[MINI])):
            url = URL(f"{env.gateway_url}{path}", encoded=True)
            async with session.post(url, json={},
                                    headers={"Authorization": f"Bearer {credential}"}
                                    ) as response:
                assert response.status == 404, path
    assert env.upstream.seen == []


async def test_metrics(env: Env, secrets_in: None) -> None:
    await env.anthropic().messages.create(model="claude-x", max_tokens=10,
                                          messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError):
        await env.anthropic(env.credentials["stale"]).messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    from prometheus_client import generate_latest
    exposition = parse(generate_latest(env.metrics.registry).decode())
    assert exposition.value("wsctl_llm_requests_total", workspace=ALICE, provider="anthropic",
                            **{"class": "ok"}) == 1
    assert exposition.value("wsctl_llm_requests_total", workspace="-", provider="anthropic",
                            **{"class": "stale_credential"}) == 1
    assert exposition.value("wsctl_llm_tokens_total", workspace=ALICE, provider="anthropic",
                            kind="input") == 21
    assert exposition.value("wsctl_llm_tokens_total", workspace=ALICE, provider="anthropic",
                            kind="cache_read") == 4
    for workspace in (ALICE, "-"):
        assert exposition.value("wsctl_llm_request_duration_seconds_count",
                                workspace=workspace, provider="anthropic") == 1
    assert not any(name.endswith("_created") for name, _ in exposition.values)
    # alice is deleted: her series go at the next scrape, the refused ones stay
    assert env.metrics.forget_unknown(lambda workspace: workspace != ALICE) > 0
    after = parse(generate_latest(env.metrics.registry).decode())
    assert not any(dict(labels).get("workspace") == ALICE for _, labels in after.values)
    assert after.value("wsctl_llm_requests_total", workspace="-", provider="anthropic",
                       **{"class": "stale_credential"}) == 1
    assert env.metrics.forget_unknown(lambda workspace: workspace != ALICE) == 0
