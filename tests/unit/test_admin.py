"""The admin/CLI API on 127.0.0.1 against an in-memory store: auth, apply, restart, a2a."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
from aiohttp import StreamReader, web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from controller.api._http import STORE_RETRY_AFTER_SECONDS
from controller.api.a2a import MAX_ANSWER, A2AProxy, AgentTarget
from controller.api.admin import (
    MAX_BODY,
    AdminApi,
    admin_auth,
    json_errors,
)
from controller.core import redact
from controller.core.a2a import message_send
from controller.core.errors import EngineUnavailableError, StoreUnavailableError
from controller.core.model import PURGE_ANNOTATION
from tests.unit.fakes import FakeStore
from tests.unit.helpers import minimax

ADMIN_TOKEN = "admin-token-0123456789abcdef"
AGENT_CREDENTIAL = "a2a-credential-of-alices-container"
BASE = "/api/v1/workspaces"


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    w = minimax(name, **spec)
    return w.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"status"})


@dataclass
class AdminEnv:
    client: TestClient[web.Request, web.Application]
    store: FakeStore
    api: AdminApi
    ready: list[bool]
    addresses: dict[str, tuple[str, int]]

    async def call(self, method: str, path: str, body: Any = None,
                   token: str | None = ADMIN_TOKEN,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        async with self.client.request(method, path, data=data, headers=sent) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text


@pytest.fixture
async def env() -> AsyncIterator[AdminEnv]:
    store = FakeStore()
    await store.apply_workspace(minimax("alice"))
    ready = [True]
    addresses: dict[str, tuple[str, int]] = {}

    async def address(workspace_id: str) -> AgentTarget | None:
        found = addresses.get(workspace_id)
        return None if found is None else AgentTarget(*found, credential=AGENT_CREDENTIAL)

    async def logs(workspace_id: str, tail: int) -> str | None:
        return f"{workspace_id} log, tail {tail}\n"

    async def metrics() -> str:
        return "# HELP wsctl_workspaces Declared workspaces.\n"

    proxy = A2AProxy(store, address, timeout_seconds=5)
    api = AdminApi(store, proxy, logs, lambda: ready[0], metrics)
    app = web.Application(middlewares=[json_errors, admin_auth(ADMIN_TOKEN)],
                          client_max_size=MAX_BODY)
    app.add_routes(api.routes())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield AdminEnv(client, store, api, ready, addresses)
    await proxy.close()


# ------------------------------------------------------------------ admin token

PROTECTED = [
    ("GET", "/metrics", None),
    ("GET", BASE, None),
    ("POST", BASE, {"items": [manifest("carol")]}),
    ("GET", f"{BASE}/alice", None),
    ("DELETE", f"{BASE}/alice", None),
    ("POST", f"{BASE}/alice/restart", None),
    ("GET", f"{BASE}/alice/describe", None),
    ("GET", "/api/v1/events", None),
    ("GET", f"{BASE}/alice/activity", None),
    ("GET", f"{BASE}/alice/logs", None),
    ("POST", f"{BASE}/alice/a2a", message_send("hi")),
    ("GET", "/api/v1/no-such-route", None),
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED,
                         ids=[f"{m} {p}" for m, p, _ in PROTECTED])
async def test_admin_token_required(env: AdminEnv, method: str, path: str, body: Any) -> None:
    before = copy.deepcopy(env.store.workspaces)
    for token, headers in ((None, None), ("wrong", None), (ADMIN_TOKEN + "x", None),
                           (None, {"Authorization": f"Basic {ADMIN_TOKEN}"}),
                           (None, {"Authorization": ADMIN_TOKEN})):
        status, answer = await env.call(method, path, body, token=token, headers=headers)
        assert status == 401, (token, headers)
        assert "admin token required" in answer["error"]
    assert env.store.workspaces == before  # nothing ran behind the refusal
    assert env.store.activity == []

    status, answer = await env.call(method, path, body)
    assert status != 401, answer


async def test_token_scheme_is_case_insensitive(env: AdminEnv) -> None:
    status, _ = await env.call("GET", BASE, token=None,
                               headers={"Authorization": f"bearer {ADMIN_TOKEN}"})
    assert status == 200


async def test_health_endpoints_need_no_token(env: AdminEnv) -> None:
    assert await env.call("GET", "/healthz", token=None) == (200, {"status": "ok"})
    assert await env.call("GET", "/readyz", token=None) == (200, {"status": "ready"})
    env.ready[0] = False
    assert await env.call("GET", "/readyz", token=None) == (503, {"status": "starting"})


# ------------------------------------------------------------------ apply


async def test_apply_with_one_invalid_document_applies_nothing(env: AdminEnv) -> None:
    bad = manifest("bob")
    bad["spec"]["resources"] = {"memory": "1Mi"}
    bad["spec"]["env"] = [{"name": "1BAD", "value": "x"}]
    before = copy.deepcopy(env.store.workspaces)
    changed_alice = manifest("alice", env=[{"name": "LOG_LEVEL", "value": "debug"}])
    status, answer = await env.call("POST", BASE,
                                    {"items": [changed_alice, bad, manifest("carol")]})
    assert status == 422
    assert answer["error"] == "invalid workspace(s); nothing was applied"
    assert answer["details"] == [
        "request: document 2 (bob): spec.env[0].name: must be a C identifier: letters, "
        "digits and '_', not starting with a digit",
        "request: document 2 (bob): spec.resources.memory: must be at least 32Mi",
    ]
    assert env.store.workspaces == before
    assert not any(c[0] == "store.apply_workspace" for c in env.store.calls[1:])


async def test_apply_reports_created_configured_unchanged(env: AdminEnv) -> None:
    items = [manifest("alice"), manifest("carol"), manifest("alice", startupTimeoutSeconds=60)]
    status, answer = await env.call("POST", BASE, {"items": items[:2]})
    assert status == 200
    assert answer["results"] == [
        {"workspace": "default/alice", "result": "unchanged", "generation": 1},
        {"workspace": "default/carol", "result": "created", "generation": 1},
    ]
    status, answer = await env.call("POST", BASE, items[2])  # a single document, not a list
    assert (status, answer["results"]) == (200, [
        {"workspace": "default/alice", "result": "configured", "generation": 2}])


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2", b""])
async def test_apply_of_non_json_is_400(env: AdminEnv, raw: bytes) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with env.client.post(BASE, data=raw, headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "body is not JSON"


async def test_apply_over_the_size_limit_is_413(env: AdminEnv) -> None:
    huge = {"items": [manifest("alice")], "pad": "x" * MAX_BODY}
    status, _ = await env.call("POST", BASE, huge)
    assert status == 413
    raw = json.dumps(huge).encode()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
        for start in range(0, len(raw), 65536):
            yield raw[start:start + 65536]
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with env.client.post(BASE, data=chunks(), headers=headers) as resp:
        assert resp.status == 413
    assert env.store.workspaces["default", "alice"].metadata.generation == 1


async def test_large_apply_arriving_in_pieces_is_read_whole(env: AdminEnv) -> None:
    body = json.dumps({"items": [manifest(f"w{i}") for i in range(200)]}).encode()
    stream = StreamReader(mock.Mock(_reading_paused=False), 2**16,
                          loop=asyncio.get_running_loop())
    request = make_mocked_request("POST", BASE, payload=stream,
                                  headers={"Content-Length": str(len(body))})
    stream.feed_data(body[: len(body) // 3])
    handling = asyncio.ensure_future(env.api.apply(request))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not handling.done(), "answered before the body was complete"
    stream.feed_data(body[len(body) // 3:])
    stream.feed_eof()
    response = await handling
    assert response.status == 200
    assert len(env.store.workspaces) == 201


async def test_apply_to_a_workspace_being_deleted_is_409(env: AdminEnv) -> None:
    assert (await env.call("DELETE", f"{BASE}/alice"))[0] == 202
    status, answer = await env.call("POST", BASE, manifest("alice"))
    assert status == 409 and "being deleted" in answer["error"]


async def test_apply_is_all_or_none_when_a_later_document_is_being_deleted(
        env: AdminEnv) -> None:
    assert (await env.call("DELETE", f"{BASE}/alice"))[0] == 202
    before = dict(env.store.workspaces)
    status, answer = await env.call("POST", BASE, {"items": [manifest("carol"),
                                                             manifest("alice")]})
    assert status == 409 and "nothing was applied" in answer["error"]
    assert env.store.workspaces == before  # carol was not created


# ------------------------------------------------------------------ restart / get / delete


async def test_restart_bumps_restarted_at(env: AdminEnv) -> None:
    before = datetime.now(UTC)
    status, answer = await env.call("POST", f"{BASE}/alice/restart")
    after = datetime.now(UTC)
    assert status == 200
    stored = env.store.workspaces["default", "alice"]
    restarted = stored.spec.restarted_at
    assert restarted is not None and before <= restarted <= after
    assert answer == {"workspace": "default/alice", "restartedAt": restarted.isoformat(),
                      "generation": 2}
    assert stored.spec.model_copy(update={"restarted_at": None}) == minimax("alice").spec

    status, again = await env.call("POST", f"{BASE}/alice/restart")
    assert status == 200 and again["generation"] == 3
    second = env.store.workspaces["default", "alice"].spec.restarted_at
    assert second is not None and second >= restarted


async def test_unknown_or_invalid_names(env: AdminEnv) -> None:
    status, answer = await env.call("POST", f"{BASE}/ghost/restart")
    assert status == 404 and answer["error"] == "workspace default/ghost not found"
    status, answer = await env.call("GET", f"{BASE}/Not_A_Label")
    assert status == 400 and "DNS-1123" in answer["error"]
    status, answer = await env.call("DELETE", f"{BASE}/alice?namespace=Bad.NS")
    assert status == 400 and "namespace" in answer["error"]
    assert env.store.workspaces["default", "alice"].metadata.deletion_timestamp is None


async def test_get_list_delete(env: AdminEnv) -> None:
    status, obj = await env.call("GET", f"{BASE}/alice")
    assert status == 200 and obj["metadata"]["name"] == "alice" and obj["kind"] == "Workspace"
    status, listed = await env.call("GET", BASE)
    assert [o["metadata"]["name"] for o in listed["items"]] == ["alice"]
    assert await env.call("DELETE", f"{BASE}/alice") == (
        202, {"workspace": "default/alice", "result": "deleting", "purge": False})
    deleting = env.store.workspaces["default", "alice"].metadata
    assert deleting.deletion_timestamp is not None and PURGE_ANNOTATION not in deleting.annotations
    assert await env.call("DELETE", f"{BASE}/alice?purge=true") == (
        202, {"workspace": "default/alice", "result": "deleting", "purge": True})
    assert env.store.workspaces["default", "alice"].metadata.annotations[PURGE_ANNOTATION] \
        == "true"
    status, answer = await env.call("DELETE", f"{BASE}/alice?purge=maybe")
    assert status == 400 and "purge must be true or false" in answer["error"]
    status, _ = await env.call("DELETE", f"{BASE}/ghost")
    assert status == 404


async def test_describe_shows_the_register_failure_class(env: AdminEnv) -> None:
    await env.store.record_register_failure("default.alice", "blocked_private_url",
                                            "10.0.0.1 is a non-public address")
    status, info = await env.call("GET", f"{BASE}/alice/describe")
    assert status == 200
    failure = info["registration"]["register_failure"]
    assert (failure["class"], failure["message"]) == ("blocked_private_url",
                                                      "10.0.0.1 is a non-public address")
    assert info["workspace"]["metadata"]["name"] == "alice"


async def test_events_oldest_first_by_workspace_namespace_or_all(env: AdminEnv) -> None:
    for workspace_id, reason in (("default.alice", "Created"), ("team.bob", "Created"),
                                 ("default.alice", "Recreated"), ("default.carol", "Ready")):
        await env.store.add_event(workspace_id, "Normal", reason, f"{reason} it")
    status, answer = await env.call("GET", "/api/v1/events?namespace=default")
    assert status == 200
    assert [(e["workspace"], e["reason"]) for e in answer["items"]] == [
        ("alice", "Created"), ("alice", "Recreated"), ("carol", "Ready")]
    first = answer["items"][0]
    assert (first["namespace"], first["type"], first["message"], first["count"]) == (
        "default", "Normal", "Created it", 1)
    _, answer = await env.call("GET", "/api/v1/events")  # no namespace: all of them
    assert [e["namespace"] for e in answer["items"]] == ["default", "team", "default",
                                                         "default"]
    _, answer = await env.call("GET", "/api/v1/events?workspace=alice")
    assert [e["reason"] for e in answer["items"]] == ["Created", "Recreated"]
    _, answer = await env.call("GET", "/api/v1/events?namespace=team&workspace=bob")
    assert [e["workspace"] for e in answer["items"]] == ["bob"]
    _, answer = await env.call("GET", "/api/v1/events?namespace=default&limit=1")
    assert [e["reason"] for e in answer["items"]] == ["Ready"]  # the newest
    for query, field in (("limit=0", "limit"), ("workspace=Bad_Name", "workspace"),
                         ("namespace=-x", "namespace"), ("watch=maybe", "watch")):
        status, answer = await env.call("GET", f"/api/v1/events?{query}")
        assert status == 400 and field in answer["error"], query


async def test_events_watch_is_not_served_without_its_hub(env: AdminEnv) -> None:
    status, answer = await env.call("GET", "/api/v1/events?watch=true")
    assert (status, answer["error"]) == (404, "events watch is not served by this controller")


# ------------------------------------------------------------------ a2a


async def test_a2a_without_a_running_container_is_409(env: AdminEnv) -> None:
    status, answer = await env.call("POST", f"{BASE}/alice/a2a", message_send("hello"))
    assert status == 409
    assert answer["class"] == "agent_unavailable"
    assert "default.alice" in answer["error"]


async def test_a2a_rejects_what_is_not_message_send(env: AdminEnv) -> None:
    bad = {**message_send("hi"), "method": "tasks/cancel"}
    status, answer = await env.call("POST", f"{BASE}/alice/a2a", bad)
    assert (status, answer["class"]) == (400, "invalid_request")
    status, answer = await env.call("POST", f"{BASE}/alice/a2a", ["not", "an", "object"])
    assert status == 400
    status, _ = await env.call("POST", f"{BASE}/ghost/a2a", message_send("hi"))
    assert status == 404


async def _serve(app: web.Application) -> tuple[TestServer, int]:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    return server, server.port


async def test_a2a_round_trip_is_logged_with_the_caller(env: AdminEnv) -> None:
    seen: list[dict[str, Any]] = []

    async def agent(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({**body, "authorization": request.headers.get("Authorization")})
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {
            "kind": "message", "role": "agent", "parts": [{"kind": "text", "text": "pong"}]}})

    app = web.Application()
    app.router.add_post("/", agent)
    runner, port = await _serve(app)
    try:
        env.addresses["default.alice"] = ("127.0.0.1", port)
        status, answer = await env.call("POST", f"{BASE}/alice/a2a", message_send("ping"),
                                        headers={"X-Wsctl-Caller": "webhook:github"})
        assert status == 200 and answer["result"]["parts"][0]["text"] == "pong"
        assert seen[0]["method"] == "message/send"
        assert seen[0]["authorization"] == f"Bearer {AGENT_CREDENTIAL}"  # its container's
        (row,) = await env.store.list_activity("default.alice")
        assert (row["source"], row["method"], row["status"]) == (
            "webhook:github", "message/send", "ok")
    finally:
        await runner.close()


async def test_a2a_to_an_agent_of_no_protocol_needs_its_a2a_port(env: AdminEnv) -> None:
    await env.store.apply_workspace(minimax("web", agent={"protocol": "none"}))
    env.addresses["default.web"] = ("127.0.0.1", 1)
    status, answer = await env.call("POST", f"{BASE}/web/a2a", message_send("hi"))
    assert status == 409
    assert "spec.agent.protocol: none" in answer["error"]
    assert "spec.agent.a2aPort" in answer["error"]
    assert await env.store.list_activity("default.web") == []

    async def agent(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {
            "kind": "message", "role": "agent", "parts": [{"kind": "text", "text": "hi"}]}})

    app = web.Application()
    app.router.add_post("/", agent)
    runner, port = await _serve(app)
    try:  # the address's port is the wsctl agent's (1 here): a2aPort is dialled instead
        await env.store.apply_workspace(minimax("web", agent={"protocol": "none",
                                                               "a2aPort": port}))
        status, answer = await env.call("POST", f"{BASE}/web/a2a", message_send("hi"))
        assert status == 200 and answer["result"]["parts"][0]["text"] == "hi"
    finally:
        await runner.close()


async def test_a2a_never_follows_an_agent_redirect(env: AdminEnv) -> None:
    """An agent answering 307 must not steer the proxy to another address (SSRF)."""
    followed: list[str] = []

    async def target(request: web.Request) -> web.Response:
        followed.append(request.path)
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})

    async def agent(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{target_port}/metadata")

    target_app = web.Application()
    target_app.router.add_route("*", "/{tail:.*}", target)
    target_runner, target_port = await _serve(target_app)
    agent_app = web.Application()
    agent_app.router.add_post("/", agent)
    agent_runner, agent_port = await _serve(agent_app)
    try:
        env.addresses["default.alice"] = ("127.0.0.1", agent_port)
        status, _ = await env.call("POST", f"{BASE}/alice/a2a", message_send("hi"))
        assert followed == []
        assert status == 502
    finally:
        await agent_runner.close()
        await target_runner.close()


async def test_deeply_nested_apply_is_400_and_server_stays_up(env: AdminEnv) -> None:
    depth = 200_000
    nested = b"[" * depth + b"]" * depth
    async with env.client.post(BASE, data=nested,
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        assert resp.status == 400
    status, answer = await env.call("GET", f"{BASE}/alice")
    assert status == 200 and answer["metadata"]["name"] == "alice"


# ------------------------------------------------------------------ 503 database unavailable


# The protected routes that read or write the store (not metrics, logs, a2a).
STORE_ROUTES = [r for r in PROTECTED if r[1].startswith(f"{BASE}")
                and not r[1].endswith(("/logs", "/a2a"))]


@pytest.mark.parametrize(("method", "path", "body"), STORE_ROUTES,
                         ids=[f"{m} {p}" for m, p, _ in STORE_ROUTES])
async def test_unreachable_database_is_503_not_500(
        env: AdminEnv, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        method: str, path: str, body: Any) -> None:
    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailableError("database unavailable (ConnectionResetError: reset)")

    for name in ("list_workspaces", "get_workspace", "request_delete", "apply_workspace"):
        monkeypatch.setattr(env.store, name, down)
    data = None if body is None else json.dumps(body).encode()
    with caplog.at_level("WARNING", logger="wsctl.api"):
        async with env.client.request(method, path, data=data, headers={
                "Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == str(STORE_RETRY_AFTER_SECONDS)
            answer = await resp.json()
    assert answer["class"] == "store_unavailable" and "retry" in answer["error"]
    records = [r for r in caplog.records if r.name == "wsctl.api"]
    assert [r.levelname for r in records] == ["WARNING"]
    assert records[0].exc_info is None  # one line, no traceback
    assert ADMIN_TOKEN not in caplog.text


async def test_openapi_documents_503_on_store_routes(env: AdminEnv) -> None:
    status, doc = await env.call("GET", "/openapi.json")
    assert status == 200
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            documented = "503" in operation["responses"]
            assert documented == (path.startswith("/api/") or path in ("/metrics", "/readyz"))


async def test_an_agent_printing_a_secret_is_redacted_in_the_answer_and_the_activity(
        env: AdminEnv) -> None:
    """The agent is untrusted: a secret it echoes (here the planted LLM key, in the
    request too) reaches neither the caller, nor the stored row, nor /activity."""
    planted = "sk-PLANTED-a2a-" + "9" * 24
    redact.remember(planted)

    async def agent(request: web.Request) -> web.Response:
        body = await request.json()
        text = body["params"]["message"]["parts"][0]["text"]
        assert planted in text  # the agent itself gets the message as sent
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {
            "kind": "message", "parts": [{"kind": "text", "text": f"my key is {planted}"}],
            planted: "as a key too"}})

    app = web.Application()
    app.router.add_post("/", agent)
    runner, port = await _serve(app)
    try:
        env.addresses["default.alice"] = ("127.0.0.1", port)
        status, answer = await env.call("POST", f"{BASE}/alice/a2a",
                                        message_send(f"echo {planted}"))
        assert status == 200 and "my key is <redacted:" in json.dumps(answer)
        stored = json.dumps(await env.store.list_activity("default.alice"), default=str)
        status, served = await env.call("GET", f"{BASE}/alice/activity")
        assert status == 200 and served["items"]
        for text in (json.dumps(answer), stored, json.dumps(served)):
            assert planted not in text
        assert "<redacted:" in stored
    finally:
        await runner.close()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_an_answer_over_1_mib_is_502_answer_too_large_and_recorded(
        env: AdminEnv, declared: bool) -> None:
    big = json.dumps({"jsonrpc": "2.0", "id": 1, "result": "x" * MAX_ANSWER}).encode()

    async def agent(request: web.Request) -> web.StreamResponse:
        await request.read()
        if declared:
            return web.Response(body=big, content_type="application/json")
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(big), 64 * 1024):
            await response.write(big[start:start + 64 * 1024])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/", agent)
    runner, port = await _serve(app)
    try:
        env.addresses["default.alice"] = ("127.0.0.1", port)
        status, answer = await env.call("POST", f"{BASE}/alice/a2a", message_send("big"))
        assert (status, answer["class"]) == (502, "answer_too_large")
        (row,) = await env.store.list_activity("default.alice")
        assert row["status"] == "error" and row["error"].startswith("answer_too_large")
        assert row["response"] is None
    finally:
        await runner.close()


async def test_an_answer_of_exactly_1_mib_passes(env: AdminEnv) -> None:
    head = json.dumps({"jsonrpc": "2.0", "id": 1, "result": ""}).encode()
    body = head[:-2] + b"x" * (MAX_ANSWER - len(head)) + head[-2:]
    assert len(body) == MAX_ANSWER

    async def agent(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/", agent)
    runner, port = await _serve(app)
    try:
        env.addresses["default.alice"] = ("127.0.0.1", port)
        status, answer = await env.call("POST", f"{BASE}/alice/a2a", message_send("edge"))
        assert status == 200 and len(answer["result"]) == MAX_ANSWER - len(head)
    finally:
        await runner.close()


async def test_a2a_while_the_engine_is_away_is_503_with_retry_after(env: AdminEnv) -> None:
    """The proxy asks Docker where the agent is; an engine restarting is a 503 to
    retry (the chaos workload counts any other 5xx as a violation)."""
    async def gone(workspace_id: str) -> AgentTarget | None:
        raise EngineUnavailableError("the Docker engine does not answer (list)")

    env.api.proxy.address = gone
    status, answer = await env.call("POST", f"{BASE}/alice/a2a", message_send("hi"))
    assert (status, answer["class"]) == (503, "engine_unavailable")
    async with env.client.request("POST", f"{BASE}/alice/a2a",
                                  data=json.dumps(message_send("hi")).encode(),
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "5"
