"""The agent registry's HTTP handlers on 127.0.0.1, against an in-memory store.

DNS is never used: the registry's resolver is replaced by a table.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from aiohttp import StreamReader, web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from controller.api import registry as registry_module
from controller.api._http import STORE_RETRY_AFTER_SECONDS
from controller.api.registry import (
    MAX_BODY,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    FailedAuthLimiter,
    Registry,
)
from controller.core import redact, tokens
from controller.core.errors import StoreUnavailableError
from tests.unit.fakes import FakeStore
from tests.unit.helpers import workspace

ALICE = "default.alice"
BOB = "default.bob"
OWN_NAME = "wsctl-default.alice-g2"
OWN_ADDRESS = "172.18.0.5"
CARD = {"name": "alice", "skills": [{"id": "chat"}]}
DNS = {"public.example": ["93.184.216.34"], "private.example": ["10.0.0.9"]}


@dataclass
class Env:
    client: TestClient[web.Request, web.Application]
    store: FakeStore
    registry: Registry
    notified: list[str]
    token: str
    """alice's live token (generation 2)."""
    old_token: str
    """alice's revoked token (generation 1)."""
    bob_token: str

    async def post(self, path: str, body: Any, token: str | None = None,
                   headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.client.post(path, data=data, headers=sent) as resp:
            return resp.status, await resp.json(content_type=None)

    async def register(self, token: str | None = None, **fields: Any) -> tuple[int, Any]:
        body = {"workspace_id": ALICE, "url": f"http://{OWN_NAME}:8000/", "agent_card": CARD}
        body.update(fields)
        return await self.post("/registry/register", body, self.token if token is None else token)

    async def beat(self, token: str | None = None, **fields: Any) -> tuple[int, Any]:
        body = {"workspace_id": ALICE, "status": "healthy", "active_tasks": 0,
                "uptime_seconds": 1.5}
        body.update(fields)
        return await self.post("/registry/heartbeat", body,
                               self.token if token is None else token)


def error_class(body: Any) -> str:
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    assert body["error"]["message"]
    return str(body["error"]["class"])


async def fake_resolve(host: str) -> list[str]:
    if host not in DNS:
        raise OSError(-2, "Name or service not known")
    return DNS[host]


async def identity(workspace_id: str) -> tuple[set[str], set[str]]:
    if workspace_id == ALICE:
        # The test client connects from 127.0.0.1: as if from alice's own container.
        return {OWN_NAME}, {OWN_ADDRESS, "127.0.0.1"}
    return set(), set()


async def make_env(store: FakeStore) -> tuple[Registry, list[str], str, str, str]:
    await store.apply_workspace(workspace("alice"))
    await store.apply_workspace(workspace("bob"))
    old, live, bob = tokens.mint(), tokens.mint(), tokens.mint()
    await store.insert_token(ALICE, 1, tokens.digest(old))
    await store.insert_token(ALICE, 2, tokens.digest(live))  # revokes generation 1
    await store.insert_token(BOB, 1, tokens.digest(bob))
    notified: list[str] = []
    return Registry(store, identity, notified.append), notified, live, old, bob


@pytest.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    monkeypatch.setattr(registry_module, "_resolve", fake_resolve)
    store = FakeStore()
    registry, notified, live, old, bob = await make_env(store)
    app = web.Application(client_max_size=MAX_BODY)  # as runtime.py builds it
    app.add_routes(registry.routes())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Env(client, store, registry, notified, live, old, bob)


# ------------------------------------------------------------------ 401


async def test_missing_token(env: Env) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer "}):
        body = {"workspace_id": ALICE, "url": f"http://{OWN_NAME}/", "agent_card": CARD}
        status, answer = await env.post("/registry/register", body, headers=headers)
        assert (status, error_class(answer)) == (401, "missing_token")
    assert env.store.registration(ALICE).auth_failure_class == "missing_token"
    assert env.store.registration(ALICE).registered_at is None
    # An agent without a token lost its token file: the reconciler replaces the container.
    assert env.notified == [ALICE] * 3


async def test_invalid_token(env: Env) -> None:
    status, answer = await env.register(token=tokens.mint())
    assert (status, error_class(answer)) == (401, "invalid_token")
    status, answer = await env.beat(token=tokens.mint())
    assert (status, error_class(answer)) == (401, "invalid_token")
    registration = env.store.registration(ALICE)
    assert registration.auth_failure_class == "invalid_token"
    assert registration.registered_at is None and registration.last_heartbeat_at is None
    assert env.notified == [ALICE, ALICE]


async def test_revoked_generation_is_stale(env: Env) -> None:
    status, answer = await env.register(token=env.old_token)
    assert (status, error_class(answer)) == (401, "stale_token")
    assert "generation 1" in answer["error"]["message"]
    registration = env.store.registration(ALICE)
    assert (registration.auth_failure_class, registration.auth_failure_generation) \
        == ("stale_token", 1)
    assert registration.registered_at is None
    assert env.notified == [ALICE]


async def test_expired_token_is_expired_not_stale(env: Env) -> None:
    """Not revoked but past expires_at: its own class (the planner refreshes the token
    rather than recreating), recorded and notified like the other refusals."""
    expired = tokens.mint()
    await env.store.insert_token(ALICE, 3, tokens.digest(expired),
                                 expires_at=datetime.now(UTC) - timedelta(seconds=1))
    status, answer = await env.beat(token=expired)
    assert (status, error_class(answer)) == (401, "expired_token")
    assert "generation 3 expired" in answer["error"]["message"]
    status, answer = await env.register(token=expired)
    assert (status, error_class(answer)) == (401, "expired_token")
    registration = env.store.registration(ALICE)
    assert (registration.auth_failure_class, registration.auth_failure_generation) \
        == ("expired_token", 3)
    assert registration.last_heartbeat_at is None and registration.registered_at is None
    assert env.notified == [ALICE, ALICE]
    assert env.registry.counters.auth_failures == {"expired_token": 2}


async def test_revoked_and_expired_token_is_stale(env: Env) -> None:
    """Revocation wins: a revoked generation is stale whatever its expiry."""
    old = tokens.mint()
    await env.store.insert_token(ALICE, 3, tokens.digest(old),
                                 expires_at=datetime.now(UTC) - timedelta(seconds=1))
    await env.store.insert_token(ALICE, 4, tokens.digest(tokens.mint()))  # revokes 3
    status, answer = await env.beat(token=old)
    assert (status, error_class(answer)) == (401, "stale_token")


async def test_token_not_yet_expired_is_accepted(env: Env) -> None:
    fresh = tokens.mint()
    await env.store.insert_token(ALICE, 3, tokens.digest(fresh),
                                 expires_at=datetime.now(UTC) + timedelta(hours=1))
    status, _ = await env.beat(token=fresh)
    assert status == 200


async def test_expired_token_from_elsewhere_is_not_acted_on(env: Env) -> None:
    expired = tokens.mint()
    await env.store.insert_token(BOB, 2, tokens.digest(expired),
                                 expires_at=datetime.now(UTC) - timedelta(seconds=1))
    body = {"workspace_id": BOB, "status": "healthy"}
    status, answer = await env.post("/registry/heartbeat", body, expired)
    assert (status, error_class(answer)) == (401, "expired_token")
    assert env.notified == []
    assert env.store.registration(BOB).auth_failure_class is None


async def test_token_of_another_workspace(env: Env) -> None:
    status, answer = await env.register(token=env.bob_token)
    assert (status, error_class(answer)) == (401, "wrong_workspace")
    assert env.store.registration(ALICE).registered_at is None
    assert env.store.registration(BOB).registered_at is None


async def test_auth_failure_for_an_unknown_workspace_creates_no_row(env: Env) -> None:
    status, answer = await env.beat(token=tokens.mint(), workspace_id="default.nobody")
    assert (status, error_class(answer)) == (401, "invalid_token")
    assert "default.nobody" not in env.store.registrations


# ------------------------------------------------------------------ 400 register classes


@pytest.mark.parametrize(("fields", "cls"), [
    ({"url": None}, "missing_url"),
    ({"url": ""}, "missing_url"),
    ({"url": "ftp://93.184.216.34/"}, "invalid_url"),
    ({"url": "http://user:pw@93.184.216.34/"}, "invalid_url"),
    ({"url": "http://unknown.example/"}, "invalid_url"),
    ({"url": "http://127.0.0.2:8000/"}, "blocked_private_url"),  # .1 is "own" here
    ({"url": "http://169.254.169.254/"}, "blocked_private_url"),
    ({"url": "http://172.18.0.6:8000/"}, "blocked_private_url"),  # a neighbour, not itself
    ({"url": "http://private.example/"}, "blocked_private_url"),
    ({"agent_card": None}, "invalid_agent_card"),
    ({"agent_card": {"name": ""}}, "invalid_agent_card"),
    ({"agent_card": {"name": "alice", "skills": "chat"}}, "invalid_agent_card"),
])
async def test_register_refusal_is_named_and_marked(env: Env, fields: dict[str, Any],
                                                    cls: str) -> None:
    status, answer = await env.register(**fields)
    assert (status, error_class(answer)) == (400, cls)
    registration = env.store.registration(ALICE)
    assert registration.register_failure is not None
    assert registration.register_failure.class_ == cls
    assert registration.registered_at is None
    assert env.registry.counters.register_failures == {cls: 1}
    assert env.notified == [ALICE]


@pytest.mark.parametrize("url", [f"http://{OWN_NAME}:8000/", f"http://{OWN_ADDRESS}:8000/",
                                 "https://93.184.216.34/", "http://public.example:8000/"])
async def test_register_accepts_own_container_and_public_hosts(env: Env, url: str) -> None:
    status, answer = await env.register(url=url)
    assert status == 200, answer
    assert env.store.registration(ALICE).url == url


@pytest.mark.parametrize(("raw", "path"), [
    (b"{not json", "/registry/register"),
    (b"", "/registry/register"),
    (b"[1, 2]", "/registry/register"),
    (b'"alice"', "/registry/heartbeat"),
    (json.dumps({"url": "http://93.184.216.34/", "agent_card": CARD}).encode(),
     "/registry/register"),
    (json.dumps({"workspace_id": "", "status": "healthy"}).encode(), "/registry/heartbeat"),
    (json.dumps({"workspace_id": 7, "status": "healthy"}).encode(), "/registry/heartbeat"),
])
async def test_malformed_body_is_invalid_body(env: Env, raw: bytes, path: str) -> None:
    status, answer = await env.post(path, raw, env.token)
    assert (status, error_class(answer)) == (400, "invalid_body")
    assert env.store.registrations.get(ALICE) is None
    assert env.notified == []


async def test_oversized_body_is_413(env: Env) -> None:
    big = json.dumps({"workspace_id": ALICE, "url": f"http://{OWN_NAME}/",
                      "agent_card": {"name": "alice", "pad": "x" * MAX_BODY}}).encode()
    status, answer = await env.post("/registry/register", big, env.token)
    assert (status, error_class(answer)) == (413, "body_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]
    async with env.client.post("/registry/register", data=chunks(),
                               headers={"Authorization": f"Bearer {env.token}"}) as resp:
        assert resp.status == 413
        assert error_class(await resp.json()) == "body_too_large"
    assert env.store.registrations.get(ALICE) is None


async def test_body_arriving_in_pieces_is_read_whole(env: Env) -> None:
    """A body is not complete when its first bytes are: read until the end."""
    body = json.dumps({"workspace_id": ALICE, "url": f"http://{OWN_NAME}:8000/",
                       "agent_card": {**CARD, "description": "d" * 30_000}}).encode()
    stream = StreamReader(mock.Mock(_reading_paused=False), 2**16,
                          loop=asyncio.get_running_loop())
    request = make_mocked_request(
        "POST", "/registry/register", payload=stream,
        headers={"Authorization": f"Bearer {env.token}",
                 "Content-Length": str(len(body))})
    stream.feed_data(body[:1000])
    handling = asyncio.ensure_future(env.registry.register(request))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not handling.done(), "answered before the body was complete"
    stream.feed_data(body[1000:])
    stream.feed_eof()
    response = await handling
    assert response.status == 200
    assert env.store.registration(ALICE).agent_card == json.loads(body)["agent_card"]


# ------------------------------------------------------------------ register success


async def test_register_records_token_generation_and_notifies(env: Env) -> None:
    await env.store.record_register_failure(ALICE, "blocked_private_url", "earlier")
    status, answer = await env.register()
    assert (status, answer) == (200, {"ok": True, "token_generation": 2})
    registration = env.store.registration(ALICE)
    assert registration.token_generation == 2
    assert registration.url == f"http://{OWN_NAME}:8000/"
    assert registration.agent_card == CARD
    assert registration.register_failure is None  # a successful register clears the marker
    assert env.notified == [ALICE]
    assert env.registry.counters.registers == 1


# ------------------------------------------------------------------ heartbeat


async def test_heartbeat_notifies_on_transitions_only(env: Env) -> None:
    beats: list[dict[str, Any]] = [
        {},                                                            # first beat
        {},
        {"active_tasks": 3, "uptime_seconds": 99.0},                   # counters are no news
        {"status": "unhealthy", "error_detail": "llm-auth: no key"},   # status change
        {"status": "unhealthy", "error_detail": "llm-auth: no key"},
        {"status": "unhealthy", "error_detail": "llm: 529 overloaded"},  # detail change
        {"status": "unhealthy", "error_detail": "llm: 529 overloaded"},
        {},                                                            # back to healthy
        {},
    ]
    woke = []
    for fields in beats:
        before = len(env.notified)
        status, answer = await env.beat(**fields)
        assert (status, answer) == (200, {"ok": True})
        woke.append(len(env.notified) - before)
    assert woke == [1, 0, 0, 1, 0, 1, 0, 1, 0]
    assert env.registry.counters.heartbeats == len(beats)
    registration = env.store.registration(ALICE)
    assert (registration.heartbeat_status, registration.heartbeat_generation) == ("healthy", 2)


async def test_new_token_generation_and_register_count_as_transitions(env: Env) -> None:
    await env.beat()
    await env.beat()
    assert env.notified == [ALICE]
    newer = tokens.mint()
    await env.store.insert_token(ALICE, 3, tokens.digest(newer))
    await env.beat(token=newer)
    assert env.notified == [ALICE, ALICE]
    await env.register(token=newer)  # the register wakes the reconciler ...
    assert env.notified == [ALICE] * 3
    await env.beat(token=newer)  # ... so a healthy first beat after it is no transition
    assert env.notified == [ALICE] * 3
    await env.register(token=newer)
    await env.beat(token=newer, status="unhealthy", error_detail="llm-auth: no key")
    assert env.notified == [ALICE] * 5  # an unhealthy first beat is one


async def test_heartbeat_state_of_workspaces_that_stopped_beating_is_forgotten(
        env: Env) -> None:
    """A deleted workspace stops beating; its state goes (at most once per stale_after,
    entries older than half of it), and that changes no wake-up."""
    env.registry.stale_after = 0.2
    bob = {"workspace_id": BOB, "status": "healthy"}
    await env.beat()
    await env.post("/registry/heartbeat", bob, env.bob_token)
    assert set(env.registry._beats) == {ALICE, BOB}
    await asyncio.sleep(0.25)  # alice is deleted: only bob beats on
    notified = len(env.notified)
    await env.post("/registry/heartbeat", bob, env.bob_token)
    assert set(env.registry._beats) == {BOB}
    assert env.notified[notified:] == [BOB]  # a beat after a gap, as before
    await env.beat()  # had alice's state been kept, this beat would wake the reconciler too
    assert env.notified[-1] == ALICE
    assert set(env.registry._beats) == {ALICE, BOB}


async def test_heartbeat_records_fields(env: Env) -> None:
    detail = "x" * 1500
    status, _ = await env.beat(status="unhealthy", error_detail=detail, active_tasks=4,
                               uptime_seconds=12)
    assert status == 200
    r = env.store.registration(ALICE)
    assert (r.heartbeat_status, r.active_tasks, r.uptime_seconds) == ("unhealthy", 4, 12.0)
    assert r.heartbeat_error_detail == detail[:1000]


async def test_agent_text_is_redacted_before_it_is_stored(env: Env) -> None:
    """A heartbeat detail, a refused URL, a claimed URL or card echoing a key the
    controller handed out: stored (and so shown by describe) with a hash prefix."""
    secret = "sk-unit-echoed-0123456789"
    redact.remember(secret)
    try:
        await env.beat(status="unhealthy", error_detail=f"llm-auth: key {secret} refused")
        detail = env.store.registration(ALICE).heartbeat_error_detail or ""
        assert secret not in detail and "<redacted:" in detail
        status, answer = await env.register(url=f"http://10.9.9.9/?k={secret}")
        assert status == 400 and secret not in json.dumps(answer)
        failure = env.store.registration(ALICE).register_failure
        assert failure is not None and secret not in failure.message
        status, _ = await env.register(url=f"http://{OWN_NAME}:8000/?k={secret}",
                                       agent_card={**CARD, "description": secret})
        assert status == 200
        stored = env.store.registration(ALICE)
        assert secret not in (stored.url or "") + json.dumps(stored.agent_card)
    finally:
        redact.forget_all()


@pytest.mark.parametrize("fields", [{"status": "ok"}, {"status": None}, {"status": "HEALTHY"},
                                    {"status": ["healthy"]}])
async def test_heartbeat_with_bad_status_is_invalid_body(env: Env,
                                                         fields: dict[str, Any]) -> None:
    status, answer = await env.beat(**fields)
    assert (status, error_class(answer)) == (400, "invalid_body")
    assert env.store.registration(ALICE).last_heartbeat_at is None
    assert env.notified == []


@pytest.mark.parametrize(("tasks", "uptime"), [
    pytest.param(-1, 1.0, id="negative-tasks"),
    pytest.param(2**40, 1.0, id="tasks-over-int4"),
    pytest.param(True, 1.0, id="bool-tasks"),
    pytest.param("3", "5", id="strings"),
    pytest.param(1, 10**400, id="uptime-beyond-float"),
])
async def test_heartbeat_ignores_out_of_range_counters(env: Env, tasks: Any,
                                                       uptime: Any) -> None:
    status, answer = await env.beat(active_tasks=tasks, uptime_seconds=uptime)
    assert (status, answer) == (200, {"ok": True})
    r = env.store.registration(ALICE)
    assert r.heartbeat_status == "healthy"
    assert r.active_tasks in (None, 1) and r.uptime_seconds in (None, 1.0)


async def test_refusals_an_agent_reports_are_counted_and_nonsense_is_not(env: Env) -> None:
    for refused in (3, 0, -5, True, "7", 2**40, None, 4):
        status, _ = await env.beat(a2a_refused=refused)
        assert status == 200  # a heartbeat is never refused for this field
    assert env.registry.counters.a2a_refused == 7


async def test_register_failure_marker_cleared_only_by_healthy_beat_or_register(env: Env
                                                                                ) -> None:
    status, _ = await env.register(url="http://10.1.1.1/")
    assert status == 400
    await env.beat(status="unhealthy", error_detail="llm-auth: no key")
    marker = env.store.registration(ALICE).register_failure
    assert marker is not None and marker.class_ == "blocked_private_url"
    await env.beat()
    assert env.store.registration(ALICE).register_failure is None
    await env.register(url="http://10.1.1.1/")
    assert env.store.registration(ALICE).register_failure is not None
    await env.register()
    assert env.store.registration(ALICE).register_failure is None


# ------------------------------------------------------------------ tampered tokens


@pytest.mark.parametrize("tamper", [
    lambda t: t[:-1], lambda t: t[:20], lambda t: t + "A", lambda t: " " + t + "x",
    lambda t: t.upper(), lambda t: t.swapcase(), lambda t: t[::-1],
    lambda t: t.replace(t[5], "_" if t[5] != "_" else "-"),
], ids=["truncated-1", "truncated-20", "padded", "spaced-padded", "upper", "swapcase",
        "reversed", "one-char-changed"])
async def test_tampered_token_is_invalid(env: Env, tamper: Any) -> None:
    forged = tamper(env.token)
    assert forged != env.token
    status, answer = await env.register(token=forged)
    assert (status, error_class(answer)) == (401, "invalid_token")
    assert env.store.registration(ALICE).registered_at is None


async def test_deeply_nested_body_is_400_and_server_stays_up(env: Env) -> None:
    depth = 30_000  # deep enough to exhaust the JSON parser's recursion, under MAX_BODY
    nested = (b'{"workspace_id": "default.alice", "agent_card": ' + b"[" * depth
              + b"]" * depth + b"}")
    assert len(nested) < MAX_BODY
    status, answer = await env.post("/registry/register", nested, env.token)
    assert (status, error_class(answer)) == (400, "invalid_body")
    status, _ = await env.register()
    assert status == 200


async def test_refused_token_from_elsewhere_is_not_acted_on(env: Env) -> None:
    """bob's container is not at 127.0.0.1: a bad token naming bob must not recreate bob."""
    body = {"workspace_id": BOB, "url": "http://x:8000/", "agent_card": CARD}
    for token, cls in ((tokens.mint(), "invalid_token"), (None, "missing_token")):
        status, answer = await env.post("/registry/register", body, token)
        assert (status, error_class(answer)) == (401, cls)
    assert env.notified == []
    assert env.store.registration(BOB).auth_failure_class is None


# ------------------------------------------------------------------ 503 database unavailable


@pytest.mark.parametrize("method", ["find_token", "record_register", "record_heartbeat"])
async def test_unreachable_database_is_503_then_recovers(
        env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        method: str) -> None:
    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailableError("database unavailable (ConnectionRefusedError: refused)")

    original = getattr(env.store, method)
    monkeypatch.setattr(env.store, method, down)
    path = "/registry/heartbeat" if method == "record_heartbeat" else "/registry/register"
    body = ({"workspace_id": ALICE, "status": "healthy"} if method == "record_heartbeat"
            else {"workspace_id": ALICE, "url": f"http://{OWN_NAME}:8000/", "agent_card": CARD})
    with caplog.at_level("WARNING", logger="wsctl.registry"):
        async with env.client.post(path, json=body,
                                   headers={"Authorization": f"Bearer {env.token}"}) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == str(STORE_RETRY_AFTER_SECONDS)
            assert error_class(await resp.json()) == "store_unavailable"
    warnings = [r for r in caplog.records if r.name == "wsctl.registry"]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    assert warnings[0].exc_info is None  # one line, no traceback
    assert env.token not in caplog.text
    assert env.registry.counters.auth_failures == {}

    monkeypatch.setattr(env.store, method, original)
    status, _ = await (env.beat() if method == "record_heartbeat" else env.register())
    assert status == 200


async def test_hearing_since_moves_past_a_database_outage(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents could not be heard while the database was away: the planner must not
    count that silence toward a liveness timeout (core/plan.py `_health_action`)."""
    started = env.registry.hearing_since
    assert started <= datetime.now(UTC)
    assert (await env.beat())[0] == 200
    assert env.registry.hearing_since == started  # nothing missed

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailableError("database unavailable (ConnectionRefusedError: refused)")

    original = env.store.record_heartbeat
    monkeypatch.setattr(env.store, "record_heartbeat", down)
    before = datetime.now(UTC)
    assert (await env.beat())[0] == 503
    missed = env.registry.hearing_since
    assert missed >= before > started
    monkeypatch.setattr(env.store, "record_heartbeat", original)
    assert (await env.beat())[0] == 200
    assert env.registry.hearing_since == missed


# ------------------------------------------------------------------ 429 failed-auth rate limit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limit(env: Env, burst: int = 3, **kwargs: Any) -> Clock:
    clock = Clock()
    env.registry.limiter = FailedAuthLimiter(burst=burst, clock=clock, **kwargs)
    return clock


def store_lookups(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    original = env.store.find_token

    async def find_token(token_hash: str) -> Any:
        seen.append(token_hash)
        return await original(token_hash)

    monkeypatch.setattr(env.store, "find_token", find_token)
    return seen


async def test_failed_auth_burst_then_429_without_touching_the_store(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    limit(env, burst=3)
    lookups = store_lookups(env, monkeypatch)
    for _ in range(3):
        status, answer = await env.beat(token=tokens.mint())
        assert (status, error_class(answer)) == (401, "invalid_token")
    assert len(lookups) == 3 and env.notified == [ALICE] * 3
    marked_at = env.store.registration(ALICE).auth_failure_at

    for token in (tokens.mint(), env.token, None):  # even a good token: no lookup at all
        body = {"workspace_id": ALICE, "status": "healthy"}
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with env.client.post("/registry/heartbeat", json=body, headers=headers) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "1"
            assert error_class(await resp.json()) == "rate_limited"
    assert len(lookups) == 3  # the 429s never reached the database
    # ... and are not auth failures of the workspace they name: no recreate from a flood.
    assert env.notified == [ALICE] * 3
    assert env.store.registration(ALICE).auth_failure_at == marked_at
    assert env.registry.counters.auth_failures == {"invalid_token": 3}
    assert env.registry.counters.auth_rate_limited == 3


async def test_failed_auth_budget_refills_over_time(env: Env) -> None:
    clock = limit(env, burst=2, refill_per_second=0.5)
    for _ in range(2):
        assert (await env.register(token=tokens.mint()))[0] == 401
    status, answer = await env.register(token=tokens.mint())
    assert (status, error_class(answer)) == (429, "rate_limited")
    clock.now += 1.0  # half a token: still out
    async with env.client.post("/registry/heartbeat", json={"workspace_id": ALICE},
                               headers={"Authorization": f"Bearer {env.token}"}) as resp:
        assert (resp.status, resp.headers["Retry-After"]) == (429, "1")
    clock.now += 1.0  # one token back: one more failure, then out again
    assert (await env.register(token=tokens.mint()))[0] == 401
    assert (await env.register(token=tokens.mint()))[0] == 429
    clock.now += 2.0
    assert (await env.register())[0] == 200  # the agent gets through once refilled
    clock.now += 3600  # a long quiet spell refills to the burst, no more
    for _ in range(2):
        assert (await env.register(token=tokens.mint()))[0] == 401
    assert (await env.register(token=tokens.mint()))[0] == 429


async def test_successful_requests_do_not_spend_the_budget(env: Env) -> None:
    limit(env, burst=2)
    for _ in range(30):
        assert (await env.beat())[0] == 200
    assert (await env.register())[0] == 200
    for _ in range(2):
        assert (await env.beat(token=tokens.mint()))[0] == 401
    assert (await env.beat())[0] == 429
    assert env.registry.counters.heartbeats == 30


def test_limiter_sources_are_independent() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(burst=2, clock=clock)
    for _ in range(2):
        limiter.spend("172.18.0.5")
    assert limiter.retry_after("172.18.0.5") == 1
    assert limiter.retry_after("172.18.0.6") is None
    limiter.spend("172.18.0.6")
    assert limiter.retry_after("172.18.0.6") is None
    assert limiter.retry_after("172.18.0.5") == 1


def test_limiter_defaults_and_retry_after() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(clock=clock)
    assert (limiter.burst, limiter.refill_per_second, limiter.max_sources) == (20, 1.0, 4096)
    for _ in range(20):
        assert limiter.retry_after("a") is None
        limiter.spend("a")
    assert limiter.retry_after("a") == 1
    slow = FailedAuthLimiter(burst=1, refill_per_second=0.1, clock=clock)
    slow.spend("a")
    assert slow.retry_after("a") == 10
    clock.now += 7.5
    assert slow.retry_after("a") == 3
    with pytest.raises(ValueError):
        FailedAuthLimiter(burst=0)


def test_limiter_table_is_bounded_least_recently_used_first() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(burst=1, max_sources=3, clock=clock)
    for source in ("a", "b", "c"):
        limiter.spend(source)
    limiter.spend("a")  # a is now the most recently seen
    limiter.spend("d")  # evicts b
    assert len(limiter) == 3
    assert limiter.retry_after("b") is None  # forgotten: a fresh bucket
    assert all(limiter.retry_after(s) == 1 for s in ("a", "c", "d"))
    for i in range(10_000):
        limiter.spend(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 3


def test_a_limiter_passed_in_is_the_one_used_even_while_empty() -> None:
    """An empty limiter has len() 0: `limiter or FailedAuthLimiter()` threw away the
    one passed in (one limiter shared with the LLM gateway would not be shared)."""
    shared = FailedAuthLimiter(burst=2, clock=Clock())
    assert len(shared) == 0
    assert Registry(FakeStore(), identity, lambda _: None, limiter=shared).limiter is shared


# ------------------------------------------------------------------ protocol version


async def test_every_answer_names_the_registry_protocol_version(env: Env) -> None:
    for path, body in (("/registry/register", {"workspace_id": ALICE, "agent_card": CARD,
                                               "url": f"http://{OWN_NAME}:8000/"}),
                       ("/registry/heartbeat", {"workspace_id": ALICE, "status": "healthy"})):
        for token in (env.token, "not-a-token"):  # accepted and refused alike
            async with env.client.post(path, json=body,
                                       headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.headers[PROTOCOL_HEADER] == str(PROTOCOL_VERSION)


async def test_a_supported_or_missing_protocol_header_is_accepted(env: Env) -> None:
    """Agents older than the header send none: they speak version 1."""
    for headers in ({}, {PROTOCOL_HEADER: str(PROTOCOL_VERSION)}, {PROTOCOL_HEADER: " 1 "}):
        status, _ = await env.post("/registry/register",
                                   {"workspace_id": ALICE, "agent_card": CARD,
                                    "url": f"http://{OWN_NAME}:8000/"}, env.token, headers)
        assert status == 200
        status, _ = await env.post("/registry/heartbeat",
                                   {"workspace_id": ALICE, "status": "healthy"},
                                   env.token, headers)
        assert status == 200


@pytest.mark.parametrize("named", ["2", "99", "0", "one", "1.0", "", "-1", "1, 2"])
async def test_an_unsupported_protocol_is_refused_before_authentication(
        env: Env, named: str) -> None:
    """A newer protocol may authenticate differently: its requests are refused with a
    class that names the header, and never count as failed authentications."""
    for path in ("/registry/register", "/registry/heartbeat"):
        status, answer = await env.post(path, {"workspace_id": ALICE, "status": "healthy"},
                                        "wrong-token", {PROTOCOL_HEADER: named})
        assert (status, error_class(answer)) == (400, "unsupported_protocol")
        assert PROTOCOL_HEADER in answer["error"]["message"]
        assert f"speaks {PROTOCOL_VERSION}" in answer["error"]["message"]
    assert env.registry.counters.auth_failures == {}
    assert env.registry.counters.protocol_refused == 2
    assert env.store.registration(ALICE).auth_failure_class is None
    # The register came from alice's own container: her status says why (RegisterFailed).
    failure = env.store.registration(ALICE).register_failure
    assert failure is not None and failure.class_ == "unsupported_protocol"
    assert PROTOCOL_HEADER in failure.message
    assert env.notified == [ALICE]


async def test_an_unsupported_protocol_from_elsewhere_marks_nothing(env: Env) -> None:
    """Only the workspace's own container may mark it (as with a refused token)."""
    for workspace_id in (BOB, "default.nobody"):  # another container; no such workspace
        status, answer = await env.post(
            "/registry/register", {"workspace_id": workspace_id}, None,
            {PROTOCOL_HEADER: "2"})
        assert (status, error_class(answer)) == (400, "unsupported_protocol")
    status, answer = await env.post("/registry/register", b"{not json", None,
                                    {PROTOCOL_HEADER: "2"})
    assert (status, error_class(answer)) == (400, "unsupported_protocol")
    assert env.store.registration(BOB).register_failure is None
    assert env.notified == []
