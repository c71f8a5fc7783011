"""The streaming routes of the admin API (exec over a WebSocket, copy as tar, logs
-f) against fake containers: what is refused before a stream starts, the frames
both ways, the answers of a failed tar, the activity rows, the session limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from controller.api._http import HttpError
from controller.api.admin import AdminApi, admin_auth, json_errors
from controller.api.exec import ExecApi
from controller.api.files import FilesApi
from controller.api.streams import Streams
from controller.core import redact
from controller.core import streams as proto
from controller.core.model import Workspace
from tests.unit.fakes import FakeStore
from tests.unit.helpers import minimax

TOKEN = "admin-token-streams-0123456789"
BASE = "/api/v1/workspaces/alice"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class FakeProcess:
    """A command: `script` turns what is written to its stdin into output."""

    output: asyncio.Queue[tuple[int, bytes] | None] = field(default_factory=asyncio.Queue)
    code: int | None = 0
    written: list[bytes] = field(default_factory=list)
    resizes: list[tuple[int, int]] = field(default_factory=list)
    stdin_closed: bool = False
    closed: bool = False
    reads_stdin: bool = True
    on_write: Callable[[FakeProcess, bytes], object] | None = None
    on_close_stdin: Callable[[FakeProcess], object] | None = None

    def say(self, stream: int, data: bytes) -> FakeProcess:
        self.output.put_nowait((stream, data))
        return self

    def end(self, code: int | None = 0) -> FakeProcess:
        self.code = code
        self.output.put_nowait(None)
        return self

    async def read(self) -> tuple[int, bytes] | None:
        if self.closed:
            return None
        return await self.output.get()

    async def write(self, data: bytes) -> bool:
        if not self.reads_stdin or self.closed:
            return False
        self.written.append(data)
        if self.on_write is not None:
            self.on_write(self, data)
        return True

    async def close_stdin(self) -> None:
        self.stdin_closed = True
        if self.on_close_stdin is not None:
            self.on_close_stdin(self)

    async def resize(self, width: int, height: int) -> None:
        self.resizes.append((width, height))

    async def exit_code(self) -> int | None:
        return self.code

    async def close(self) -> None:
        self.closed = True
        self.output.put_nowait(None)


@dataclass
class FakeFollow:
    chunks: list[bytes]
    closed: bool = False

    async def read(self) -> bytes | None:
        return self.chunks.pop(0) if self.chunks else None

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeContainers:
    running_: bool = True
    processes: list[FakeProcess] = field(default_factory=list)
    commands: list[tuple[list[str], bool, bool]] = field(default_factory=list)
    follow: FakeFollow | None = None

    async def running(self, workspace_id: str) -> bool:
        return self.running_

    async def exec(self, workspace_id: str, command: Sequence[str], *, tty: bool,
                   stdin: bool) -> FakeProcess | None:
        self.commands.append((list(command), tty, stdin))
        if not self.running_ or not self.processes:
            return None
        return self.processes.pop(0)

    async def follow_logs(self, workspace_id: str, tail: int) -> FakeFollow | None:
        return self.follow


@dataclass
class Env:
    client: TestClient[web.Request, web.Application]
    store: FakeStore
    containers: FakeContainers
    streams: Streams
    woken: list[str]
    busy: list[str]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    store = FakeStore()
    await store.apply_workspace(minimax("alice"))
    containers = FakeContainers()
    woken: list[str] = []
    busy: list[str] = []

    async def wake(ws: Workspace) -> None:
        woken.append(ws.key.id)

    @contextlib.contextmanager
    def in_use(workspace_id: str) -> Iterator[None]:
        busy.append(workspace_id)
        yield

    streams = Streams(store, containers, wake=wake, busy=in_use)

    async def logs(workspace_id: str, tail: int) -> str | None:
        return ""

    async def metrics() -> str:
        return ""

    admin = AdminApi(store, None, logs, lambda: True, metrics,  # type: ignore[arg-type]
                     follow_logs=streams.follow_logs)
    app = web.Application(middlewares=[json_errors, admin_auth(TOKEN)])
    app.add_routes([*admin.routes(), *ExecApi(streams).routes(), *FilesApi(streams).routes()])
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Env(client, store, containers, streams, woken, busy)


def exec_url(*command: str, tty: bool = False, stdin: bool = False) -> str:
    query = "&".join(f"command={c}" for c in command)
    return f"{BASE}/exec?{query}&tty={str(tty).lower()}&stdin={str(stdin).lower()}"


async def recorded(env: Env, count: int = 1) -> dict[str, Any]:
    """The newest activity row, once `count` rows exist (a stream records after it
    answered, so the client may see the end first)."""
    for _ in range(300):
        if len(env.store.activity) >= count:
            return dict(env.store.activity[-1])
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} activity rows expected, {len(env.store.activity)} seen")


async def status_of(env: Env, method: str, path: str, *, token: bool = True,
                    data: bytes | None = None) -> tuple[int, Any]:
    async with env.client.request(method, path, headers=AUTH if token else {},
                                  data=data) as resp:
        body = await resp.read()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body


# ------------------------------------------------------------------ refused before a stream


@pytest.mark.parametrize(("method", "path"), [
    ("GET", f"{BASE}/exec?command=id"), ("GET", f"{BASE}/files?path=/workspace"),
    ("PUT", f"{BASE}/files?path=/workspace"), ("GET", f"{BASE}/files/stat?path=/"),
    ("GET", f"{BASE}/logs?follow=true"),
])
async def test_every_stream_route_needs_the_admin_token(env: Env, method: str,
                                                        path: str) -> None:
    assert (await status_of(env, method, path, token=False))[0] == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await env.client.ws_connect(f"{BASE}/exec?command=id")
    assert info.value.status == 401
    assert env.containers.commands == []


async def test_exec_refusals_are_json_answers_before_the_upgrade(env: Env) -> None:
    status, body = await status_of(env, "GET", f"{BASE}/exec?command=id")
    assert (status, body["class"]) == (400, "websocket_required")
    assert env.woken == []  # a plain GET wakes nothing and runs nothing
    for path, code in ((f"{BASE}/exec", 400), (f"{BASE}/exec?command=id&tty=maybe", 400),
                       ("/api/v1/workspaces/nobody/exec?command=id", 404),
                       ("/api/v1/workspaces/Bad_Name/exec?command=id", 400)):
        assert (await status_of(env, "GET", path))[0] == code, path
    env.containers.running_ = False
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await env.client.ws_connect(exec_url("id"), headers=AUTH)
    assert info.value.status == 409
    assert env.woken == ["default.alice"]
    assert env.containers.commands == []


async def test_the_session_limit_is_429(env: Env) -> None:
    env.streams.max_sessions = 1
    with env.streams.session("default.alice"):
        with pytest.raises(HttpError) as info, env.streams.session("default.alice"):
            pass
        assert info.value.status == 429 and info.value.retry_after == 1
    with env.streams.session("default.alice"):
        pass
    assert env.streams.open_sessions == 0


# ------------------------------------------------------------------ exec


async def test_exec_passes_frames_both_ways_and_ends_with_the_exit_code(env: Env) -> None:
    secret = "sk-exec-secret-0123456789"
    redact.remember(secret)

    def upper(process: FakeProcess, data: bytes) -> None:
        process.say(1, data.upper())

    process = FakeProcess(on_write=upper,
                          on_close_stdin=lambda p: p.say(2, b"bye\n").end(7))
    env.containers.processes.append(process)
    try:
        async with env.client.ws_connect(exec_url("sh", "-c", secret, tty=True, stdin=True),
                                         headers=AUTH, protocols=(proto.SUBPROTOCOL,)) as ws:
            assert ws.protocol == proto.SUBPROTOCOL
            await ws.send_bytes(proto.resize_frame(100, 40))
            await ws.send_bytes(proto.frame(proto.STDIN, b"hello"))
            await ws.send_bytes(b"\x09nonsense")  # an unknown channel is ignored
            await ws.send_str("text is ignored")
            assert proto.parse((await ws.receive()).data) == (proto.STDOUT, b"HELLO")
            await ws.send_bytes(proto.frame(proto.CLOSE, bytes((proto.STDIN,))))
            frames = []
            async for message in ws:
                assert message.type == WSMsgType.BINARY
                frames.append(proto.parse(message.data))
        # With a TTY there is no stderr: all output is stdout.
        assert frames == [(proto.STDOUT, b"bye\n"), (proto.STATUS, b'{"exitCode": 7}')]
        assert ws.close_code == 1000
        row = await recorded(env)
    finally:
        redact.forget_all()
    assert process.resizes == [(100, 40)] and process.stdin_closed and process.closed
    assert env.containers.commands == [(["sh", "-c", secret], True, True)]
    assert env.busy == ["default.alice"]
    assert row["method"] == "exec" and row["source"] == "user"
    assert secret not in json.dumps(row) and "<redacted:" in row["request"]["command"][2]
    assert row["response"]["exitCode"] == 7
    assert row["response"]["bytes"] == {"stdin": 5, "stdout": 9, "stderr": 0}
    assert (row["status"], row["error"]) == ("error", "exit code 7")


async def test_exec_without_stdin_ignores_input_and_keeps_stderr_apart(env: Env) -> None:
    process = FakeProcess().say(1, b"out").say(2, b"err").end(0)
    env.containers.processes.append(process)
    async with env.client.ws_connect(exec_url("id"), headers=AUTH) as ws:
        await ws.send_bytes(proto.frame(proto.STDIN, b"dropped"))
        frames = [proto.parse(m.data) async for m in ws]
    assert frames == [(proto.STDOUT, b"out"), (proto.STDERR, b"err"),
                      (proto.STATUS, b'{"exitCode": 0}')]
    assert process.written == []
    assert (await recorded(env))["status"] == "ok"


async def test_a_client_that_goes_away_leaves_the_command_recorded_as_such(env: Env) -> None:
    process = FakeProcess()
    env.containers.processes.append(process)
    ws = await env.client.ws_connect(exec_url("sleep", "100", stdin=True), headers=AUTH)
    await ws.close()
    row = await recorded(env)
    assert row["error"] == "the client went away before the command ended"
    assert row["response"]["exitCode"] is None
    assert process.closed


# ------------------------------------------------------------------ files


async def test_a_download_streams_the_tar_of_the_path(env: Env) -> None:
    body = bytes(range(256)) * 200  # 51,200 bytes: past the first 20 KiB
    process = FakeProcess()
    for i in range(0, len(body), 5000):
        process.say(1, body[i:i + 5000])
    process.end(0)
    env.containers.processes.append(process)
    async with env.client.get(f"{BASE}/files?path=/workspace//data/", headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-tar"
        assert await resp.read() == body
    assert env.containers.commands == [
        (["tar", "-c", "-f", "-", "-C", "/workspace", "./data"], False, False)]
    row = await recorded(env)
    assert row["request"] == {"direction": "download", "path": "/workspace/data"}
    assert row["response"]["bytes"] == {"tar": len(body)} and row["status"] == "ok"


@pytest.mark.parametrize(("said", "code", "status"), [
    (b"tar: ./x: Cannot stat: No such file or directory\n", 2, 404),
    (b"tar: ./x: Cannot open: Permission denied\n", 2, 422),
    (b'OCI runtime exec failed: exec: "tar": executable file not found in $PATH\n', 126, 422),
])
async def test_a_tar_that_fails_before_20_kib_is_an_answer_with_its_message(
        env: Env, said: bytes, code: int, status: int) -> None:
    env.containers.processes.append(FakeProcess().say(2, said).say(1, b"\0" * 10240).end(code))
    got, body = await status_of(env, "GET", f"{BASE}/files?path=/workspace/x")
    assert got == status
    assert said.decode().strip().split(": ")[-1] in body["error"]
    assert (await recorded(env))["status"] == "error"


async def test_a_tar_that_fails_later_cuts_the_transfer(env: Env) -> None:
    process = FakeProcess().say(1, b"x" * 30_000).say(2, b"tar: read error\n").end(2)
    env.containers.processes.append(process)
    async with env.client.get(f"{BASE}/files?path=/workspace/x", headers=AUTH) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert "read error" in (await recorded(env))["error"]


async def test_copying_the_root_or_into_configs_is_refused(env: Env) -> None:
    status, body = await status_of(env, "GET", f"{BASE}/files?path=/")
    assert status == 400 and "whole root" in body["error"]
    for path in ("/configs", "/configs/.auth_token", "/workspace/../configs/x"):
        status, body = await status_of(env, "PUT", f"{BASE}/files?path={path}", data=b"x")
        assert status == 403 and "token volume" in body["error"], path
    assert (await status_of(env, "GET", f"{BASE}/files"))[0] == 400
    assert (await status_of(env, "GET", f"{BASE}/files?path=relative"))[0] == 400
    assert env.containers.commands == []


async def test_an_upload_streams_the_body_into_tar(env: Env) -> None:
    process = FakeProcess(on_close_stdin=lambda p: p.end(0))
    env.containers.processes.append(process)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"t" * 100_000

    async with env.client.put(f"{BASE}/files?path=/workspace", data=body(),
                              headers=AUTH) as resp:
        assert resp.status == 200
        assert await resp.json() == {"path": "/workspace", "bytes": 1_000_000}
    assert env.containers.commands == [(["tar", "-x", "-f", "-", "-C", "/workspace"],
                                        False, True)]
    assert sum(map(len, process.written)) == 1_000_000 and process.stdin_closed
    assert max(map(len, process.written)) <= 256 * 1024
    row = await recorded(env)
    assert row["request"] == {"direction": "upload", "path": "/workspace"}
    assert row["response"]["bytes"] == {"tar": 1_000_000} and row["status"] == "ok"


async def test_an_upload_tar_refuses_is_422_after_the_body_is_read(env: Env) -> None:
    process = FakeProcess(reads_stdin=False).say(2, b"tar: This does not look like a tar "
                                                    b"archive\n").end(2)
    env.containers.processes.append(process)
    status, body = await status_of(env, "PUT", f"{BASE}/files?path=/workspace",
                                   data=b"garbage" * 100_000)
    assert status == 422 and "does not look like a tar archive" in body["error"]
    assert (await recorded(env))["status"] == "error"


async def test_stat_says_what_the_path_is(env: Env) -> None:
    env.containers.processes.append(FakeProcess().say(1, b"directory\n").end(0))
    status, body = await status_of(env, "GET", f"{BASE}/files/stat?path=/workspace/")
    assert (status, body) == (200, {"path": "/workspace", "type": "directory"})
    assert env.containers.commands[-1][0][:2] == ["sh", "-c"]
    assert env.containers.commands[-1][0][-1] == "/workspace"
    env.containers.processes.append(FakeProcess().say(1, b"sh: not found\n").end(127))
    assert (await status_of(env, "GET", f"{BASE}/files/stat?path=/x"))[0] == 422


# ------------------------------------------------------------------ logs -f


async def test_logs_follow_streams_redacted_until_the_end(env: Env) -> None:
    secret = "sk-follow-secret-0123456789"
    redact.remember(secret)
    env.containers.follow = FakeFollow([b"line one\nkey sk-follow-", b"secret-0123456789\n",
                                        b"tail"])
    try:
        async with env.client.get(f"{BASE}/logs?follow=true", headers=AUTH) as resp:
            assert resp.status == 200
            text = await resp.text()
    finally:
        redact.forget_all()
    assert secret not in text and text.startswith("line one\nkey <redacted:")
    assert text.endswith("\ntail")
    assert env.containers.follow.closed
    assert env.busy == []  # watching logs does not keep a workspace busy
    env.containers.follow = None
    assert (await status_of(env, "GET", f"{BASE}/logs?follow=1"))[0] == 404


async def test_logs_follow_stops_when_the_client_goes_away(env: Env) -> None:
    never = asyncio.Event()

    class Quiet(FakeFollow):
        async def read(self) -> bytes | None:
            await never.wait()
            return None

    follow = Quiet([])
    env.containers.follow = follow
    resp = await env.client.get(f"{BASE}/logs?follow=true", headers=AUTH)
    assert resp.status == 200
    resp.close()
    for _ in range(300):
        if follow.closed:
            break
        await asyncio.sleep(0.01)
    assert follow.closed and env.streams.open_sessions == 0



@pytest.mark.parametrize("cancellation", [True, False])
async def test_an_upload_cut_by_the_client_is_recorded_not_logged_as_an_error(
        env: Env, caplog: pytest.LogCaptureFixture, cancellation: bool) -> None:
    """Either way aiohttp may tell the handler (cancelled, as in the test server, or
    its body read failing, as `wsctl run` serves: handler_cancellation=False)."""
    process = FakeProcess(on_close_stdin=lambda p: p.end(0))
    env.containers.processes.append(process)
    app = env.client.app
    assert app is not None
    runner = web.AppRunner(app, handler_cancellation=cancellation)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def body() -> AsyncIterator[bytes]:
        yield b"t" * 300_000
        await asyncio.sleep(0.1)
        raise RuntimeError("the user pressed Ctrl-C")

    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises((aiohttp.ClientError, RuntimeError)):
                async with session.put(f"http://127.0.0.1:{port}{BASE}/files?path=/workspace",
                                       data=body(), headers=AUTH):
                    pass
        row = await recorded(env)
    finally:
        await runner.cleanup()
    assert row["status"] == "error" and row["error"] == "the client went away during the copy"
    assert process.closed
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
