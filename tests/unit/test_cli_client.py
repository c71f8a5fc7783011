"""CLI table helpers, and the client's one-line explanations against a tiny 127.0.0.1 server."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from controller.app.cli_workspaces import _age, reply_text, row, table
from controller.app.client import Client, ClientError
from controller.core.model import Workspace, WorkspaceStatus
from tests.unit.helpers import workspace

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def wire(status: dict[str, Any] | None = None, created: datetime | None = NOW,
         name: str = "alice") -> dict[str, Any]:
    """A workspace as the API sends it (camelCase, JSON types)."""
    w = workspace(name)
    meta = w.metadata.model_copy(update={"creation_timestamp": created})
    update: dict[str, Any] = {"metadata": meta}
    if status is not None:
        update["status"] = WorkspaceStatus.model_validate(status)
    return Workspace.model_validate(w.model_copy(update=update).to_wire()).to_wire()


def condition(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": "",
            "lastTransitionTime": "2026-11-24T11:00:00Z"}


# ------------------------------------------------------------------ _age


@pytest.mark.parametrize(("delta", "shown"), [
    (timedelta(seconds=0), "0s"),
    (timedelta(seconds=59), "59s"),
    (timedelta(seconds=60), "1m"),
    (timedelta(minutes=59, seconds=59), "59m"),
    (timedelta(hours=1), "1h"),
    (timedelta(hours=23, minutes=59), "23h"),
    (timedelta(days=1), "1d"),
    (timedelta(days=400), "400d"),
    (timedelta(seconds=-30), "0s"),  # a clock slightly behind the server's
])
def test_age(delta: timedelta, shown: str) -> None:
    assert _age((NOW - delta).isoformat(), NOW) == shown


def test_age_accepts_the_wire_format_and_missing() -> None:
    assert _age("2026-11-24T11:58:00Z", NOW) == "2m"
    assert _age(None, NOW) == "-"
    assert _age("", NOW) == "-"


# ------------------------------------------------------------------ row / table


def test_row_of_a_new_workspace() -> None:
    assert row(wire(created=NOW - timedelta(seconds=5)), NOW) \
        == ["alice", "Pending", "Unknown", "-", "0", "none", "5s"]


def test_row_online() -> None:
    obj = wire({"phase": "Online", "restartCount": 2, "conditions": [
        condition("Ready", "True", "Registered"), condition("Degraded", "False", "Healthy")]},
        created=NOW - timedelta(hours=3))
    assert row(obj, NOW) == ["alice", "Online", "True", "-", "2", "none", "3h"]


def test_row_shows_the_degraded_reason_first() -> None:
    obj = wire({"phase": "Degraded", "conditions": [
        condition("Ready", "False", "WaitingForRegistration"),
        condition("Degraded", "True", "RegisterFailed")]})
    assert row(obj, NOW)[1:4] == ["Degraded", "False", "RegisterFailed"]


def test_row_falls_back_to_the_not_ready_reason() -> None:
    obj = wire({"phase": "Provisioning", "conditions": [
        condition("Ready", "False", "ContainerStarting"),
        condition("Degraded", "False", "Healthy")]})
    assert row(obj, NOW)[3] == "ContainerStarting"


def test_table_aligns_columns_and_strips_trailing_space() -> None:
    text = table([["alice", "Online", "True"], ["bo", "Degraded", "False"]],
                 ["NAME", "PHASE", "READY"])
    assert text.splitlines() == [
        "NAME    PHASE      READY",
        "alice   Online     True",
        "bo      Degraded   False",
    ]
    assert table([], ["NAME", "AGE"]) == "NAME   AGE"
    assert table([["a", ""]], ["NAME", ""]).splitlines() == ["NAME", "a"]


# ------------------------------------------------------------------ reply_text


@pytest.mark.parametrize(("answer", "text"), [
    ({"result": {"kind": "message", "parts": [{"kind": "text", "text": "hi "},
                                              {"kind": "text", "text": "there"}]}},
     "hi there"),
    ({"result": {"kind": "task", "status": {"state": "completed", "message": {
        "parts": [{"kind": "text", "text": "done"}]}}}}, "done"),
    ({"result": {"parts": [{"kind": "data", "data": {}}, "junk", {"kind": "text", "text": "x"}]}},
     "x"),
    ({"result": {"kind": "task", "status": {"state": "working"}}}, ""),
    ({"result": {"kind": "task", "status": {"state": "working", "message": None}}}, ""),
    ({"result": None}, ""),
    ({"error": {"code": -32000, "message": "boom"}}, ""),
])
def test_reply_text(answer: dict[str, Any], text: str) -> None:
    assert reply_text(answer) == text


# ------------------------------------------------------------------ client explanations


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy variables: keep every request on 127.0.0.1."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
async def server(no_proxy: None) -> AsyncIterator[str]:
    async def unauthorized(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": "admin token required (Authorization: Bearer <token>)"}, status=401)

    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"error": "workspace default/ghost not found"}, status=404)

    async def invalid(request: web.Request) -> web.Response:
        return web.json_response({
            "error": "invalid workspace(s); nothing was applied",
            "details": ["request: document 2 (bob): spec.resources.memory: must be at least 32Mi",
                        "request: document 2 (bob): spec.paused: Input should be a valid boolean"],
        }, status=422)

    async def broken(request: web.Request) -> web.Response:
        return web.Response(text="<html>oops</html>", status=502, reason="Bad Gateway")

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"auth": request.headers.get("Authorization"),
                                  "query": dict(request.query),
                                  "body": await request.json() if request.can_read_body
                                  else None})

    app = web.Application()
    app.router.add_get("/unauthorized", unauthorized)
    app.router.add_get("/missing", not_found)
    app.router.add_post("/invalid", invalid)
    app.router.add_get("/broken", broken)
    app.router.add_route("*", "/ok", ok)
    async with TestServer(app, host="127.0.0.1") as test_server:
        yield str(test_server.make_url("")).rstrip("/")


async def fails(client: Client, method: str, path: str, body: Any = None) -> str:
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(client.request, method, path, body)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


async def test_401_404_422_are_one_line_each(server: str) -> None:
    client = Client(server, "wrong-token", timeout=10)
    assert await fails(client, "GET", "/unauthorized") \
        == "401 admin token required (Authorization: Bearer <token>)"
    assert await fails(client, "GET", "/missing") == "404 workspace default/ghost not found"
    assert await fails(client, "POST", "/invalid", {"items": []}) == (
        "422 invalid workspace(s); nothing was applied: "
        "request: document 2 (bob): spec.resources.memory: must be at least 32Mi; "
        "request: document 2 (bob): spec.paused: Input should be a valid boolean")


async def test_non_json_error_uses_the_http_reason(server: str) -> None:
    assert await fails(Client(server, "t", timeout=10), "GET", "/broken") == "502 Bad Gateway"


async def test_success_sends_token_query_and_json(server: str) -> None:
    client = Client(server, "s3cret", timeout=10)
    answer = await asyncio.to_thread(client.request, "POST", "/ok", {"a": 1},
                                     {"namespace": "team-a"})
    assert answer == {"auth": "Bearer s3cret", "query": {"namespace": "team-a"},
                      "body": {"a": 1}}


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but not listening: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_connection_refused_names_the_server_and_wsctl_run(refused_port: int,
                                                                 no_proxy: None) -> None:
    server = f"http://127.0.0.1:{refused_port}"
    message = await fails(Client(server, "t", timeout=10), "GET", "/api/v1/workspaces")
    assert server in message
    assert "`wsctl run`" in message
    assert "refused" in message.lower()


def test_missing_token_file_says_where_and_what_to_do(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSCTL_ADMIN_TOKEN", raising=False)
    with pytest.raises(ClientError) as caught:
        Client.from_environment(None, tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "admin.token") in message and "`wsctl run`" in message


def test_server_and_token_from_environment(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSCTL_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("WSCTL_SERVER", raising=False)
    (tmp_path / "admin.token").write_text("from-file\n")
    assert Client.from_environment(None, tmp_path) == Client("http://127.0.0.1:8080",
                                                             "from-file")
    monkeypatch.setenv("WSCTL_SERVER", "127.0.0.1:9999/")
    monkeypatch.setenv("WSCTL_ADMIN_TOKEN", "from-env")
    assert Client.from_environment(None, tmp_path) == Client("http://127.0.0.1:9999",
                                                             "from-env")
    assert Client.from_environment("http://127.0.0.1:1234", tmp_path).server \
        == "http://127.0.0.1:1234"


def test_the_server_a_running_controller_announced_is_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A controller started with another --listen is found through its server.json;
    --server and $WSCTL_SERVER still win, and a broken file is ignored."""
    monkeypatch.delenv("WSCTL_SERVER", raising=False)
    monkeypatch.setenv("WSCTL_ADMIN_TOKEN", "t")
    (tmp_path / "server.json").write_text(json.dumps({"url": "http://127.0.0.1:18080",
                                                      "pid": 1}))
    assert Client.from_environment(None, tmp_path).server == "http://127.0.0.1:18080"
    assert Client.from_environment("127.0.0.1:1", tmp_path).server == "http://127.0.0.1:1"
    monkeypatch.setenv("WSCTL_SERVER", "127.0.0.1:2")
    assert Client.from_environment(None, tmp_path).server == "http://127.0.0.1:2"
    monkeypatch.delenv("WSCTL_SERVER")
    for broken in ("not json", '["a list"]', '{"url": "file:///etc/passwd"}'):
        (tmp_path / "server.json").write_text(broken)
        assert Client.from_environment(None, tmp_path).server == "http://127.0.0.1:8080"


@pytest.mark.parametrize(("egress", "shown"), [
    (None, "none"), ({"mode": "none"}, "none"), ({"mode": "open"}, "OPEN"),
    ({"mode": "allowlist", "allow": ["a.example", "b.example"]}, "allowlist(2)"),
    ({"mode": "allowlist"}, "allowlist(0)")])
def test_egress_column(egress: dict[str, Any] | None, shown: str) -> None:
    from controller.app.cli_workspaces import egress_shown
    assert egress_shown(egress) == shown


def test_selectors() -> None:
    import argparse as ap

    from controller.app.cli_workspaces import selector

    def labelled(**labels: str) -> dict[str, Any]:
        return {"metadata": {"name": "x", "labels": labels}}
    team = selector("team=a, tier!=db")
    assert team(labelled(team="a", tier="web")) and team(labelled(team="a"))
    assert not team(labelled(team="b")) and not team(labelled(team="a", tier="db"))
    assert selector("gpu")(labelled(gpu="yes")) and not selector("gpu")(labelled())
    assert selector("!gpu")(labelled()) and not selector("!gpu")(labelled(gpu=""))
    assert selector("team==a")(labelled(team="a"))
    assert not selector("team=a")({"metadata": {"name": "x"}})  # no labels at all
    for bad in ("=a", "a b=c", "!", "a=b=c"):
        with pytest.raises(ap.ArgumentTypeError):
            selector(bad)


def test_sort_by() -> None:
    import argparse as ap

    from controller.app.cli_workspaces import sort_key

    objects: list[dict[str, Any]] = [
        {"metadata": {"name": "b"}, "status": {"restartCount": 10}},
        {"metadata": {"name": "a"}, "status": {"restartCount": 9}},
        {"metadata": {"name": "c"}}]
    by_restarts = sorted(objects, key=sort_key(".status.restartCount"))
    assert [o["metadata"]["name"] for o in by_restarts] == ["c", "a", "b"]  # 9 < 10
    by_name = sorted(objects, key=sort_key("{.metadata.name}"))
    assert [o["metadata"]["name"] for o in by_name] == ["a", "b", "c"]
    for bad in ("metadata.name", ".", ".a..b"):
        with pytest.raises(ap.ArgumentTypeError):
            sort_key(bad)


def test_explain_prints_a_fields_documentation(capsys: pytest.CaptureFixture[str]) -> None:
    from controller.app.cli import main

    assert main(["explain", "spec.egress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("FIELD:  spec.egress <object>")
    assert "Where the workspace may connect beyond the controller" in out
    assert "  mode\t<string: none | allowlist | open>" in out
    assert main(["explain", "spec.env.valueFrom"]) == 0  # through a list
    assert main(["explain", "spec.nope"]) == 1
    assert "field 'nope' does not exist in spec; its fields: image," in \
        capsys.readouterr().err


def test_a_streamed_table_widens_as_rows_come() -> None:
    from controller.app.cli_workspaces import StreamedTable

    printed = StreamedTable(["NAME", "PHASE"])
    assert printed.lines(["a", "Pending"]) == ["NAME   PHASE", "a      Pending"]
    assert printed.lines(["a-longer-name", "Online"]) == ["a-longer-name   Online"]
    assert printed.lines(["b", "Online"]) == ["b               Online"]  # no narrower again


def test_get_o_name_prints_one_line_per_workspace() -> None:
    from controller.app.cli_workspaces import shown

    objects = [{"metadata": {"name": n}} for n in ("a", "b")]
    assert "".join(shown(o, "name") for o in objects) == "workspace/a\nworkspace/b\n"
