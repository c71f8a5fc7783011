"""The admin token, against the real `wsctl run` process: every route of its own
/openapi.json refuses a request without the token (or with a wrong one) with 401
and changes nothing; only /healthz and /readyz answer without it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from controller.core.a2a import message_send
from controller.testing.harness import ControllerProcess, FakeLLMThread
from tests.e2e.test_lifecycle import online, workspace

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

PUBLIC = {"/healthz", "/readyz"}


def call(controller: ControllerProcess, method: str, path: str, body: Any = None,
         authorization: str | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{controller.server}{path}", data=data,
                                     method=method)
    request.add_header("Content-Type", "application/json")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def body_for(method: str, path: str) -> Any:
    if path.endswith("/a2a"):
        return message_send("hello")
    if method == "POST" and path == "/api/v1/workspaces":
        return {"items": [workspace("tok-new")]}
    return None


def test_every_route_but_health_needs_the_admin_token(
        controller: ControllerProcess, fake_llm: FakeLLMThread) -> None:
    controller.apply(workspace("tok", fake_llm.port))
    before = online(controller, "tok")
    token = (controller.data_dir / "admin.token").read_text().strip()
    status, raw = call(controller, "GET", "/openapi.json", authorization=f"Bearer {token}")
    assert status == 200
    routes = [(method.upper(), path.replace("{name}", "tok"))
              for path, item in json.loads(raw)["paths"].items() for method in item]
    protected = [r for r in routes if r[1] not in PUBLIC]
    assert len(protected) >= 10 and ("GET", "/openapi.json") in protected

    for method, path in protected:
        for authorization in (None, "Bearer wrong", f"Bearer {token}x", f"Basic {token}",
                              token):
            status, raw = call(controller, method, path, body_for(method, path), authorization)
            assert status == 401, (method, path, authorization, raw[:200])
            assert b"admin token required" in raw
    for path in PUBLIC:
        assert call(controller, "GET", path)[0] == 200

    after = controller.get("tok")  # nothing behind a refusal ran
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["status"]["containerID"] == before["status"]["containerID"]
    assert after["metadata"].get("deletionTimestamp") is None
    names = {w["metadata"]["name"] for w in controller.client().request(
        "GET", "/api/v1/workspaces")["items"]}
    assert "tok-new" not in names
    rows = controller.client().request("GET", "/api/v1/workspaces/tok/activity")["items"]
    assert rows == []

    for method, path in protected:  # and the right token is let through
        status, raw = call(controller, method, path.replace("/tok/", "/tok-missing/"),
                           body_for(method, path), f"Bearer {token}")
        assert status != 401, (method, path, raw[:200])
