"""`GET /api/v1/workspaces/{name}/exec`: a command in the workspace's running
container, attached over a WebSocket (the frames: `controller/core/streams.py`).

Query: `command` (repeated: the program, then each argument), `tty` and `stdin`
(true/false, default false), `namespace`. The command runs as the agent's uid
(10001), never root, in the newest running container of the workspace. Before
the upgrade the answers are plain JSON: 400 (bad query, or a request that is not
a WebSocket upgrade), 401, 404, 409 (no running container), 429 (too many
streams). Standard output and error are passed on byte for byte, not redacted:
they are the workspace's own, sent to the admin-token holder; what is stored (the
activity row: the command, redacted; bytes in and out; the exit code) is redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from controller.api._http import HttpError
from controller.api.streams import (
    ExecProcess,
    Outcome,
    Streams,
    bad_request,
    bool_query,
    no_container,
)
from controller.core.streams import (
    CLOSE,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    SUBPROTOCOL,
    FrameError,
    check_command,
    frame,
    parse,
    parse_resize,
    status_frame,
)

log = logging.getLogger("wsctl.api")

HEARTBEAT_SECONDS = 30.0
"""WebSocket pings; a client that stops answering is taken as gone."""
GONE = "the client went away before the command ended"
HANG_UP_PAUSE = 0.2
MAX_MESSAGE = 1024 * 1024
"""A client frame (stdin data) at most; wsctl sends 64 KiB at most."""


class ExecApi:
    def __init__(self, streams: Streams) -> None:
        self.streams = streams

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v1/workspaces/{name}/exec", Streams.api(self.exec),
                        allow_head=False)]

    async def exec(self, request: web.Request) -> web.StreamResponse:
        try:
            command = check_command(request.query.getall("command", []))
        except FrameError as exc:
            raise bad_request(str(exc)) from None
        tty, stdin = bool_query(request, "tty"), bool_query(request, "stdin")
        ws = await self.streams.workspace(request)
        socket = web.WebSocketResponse(protocols=(SUBPROTOCOL,), heartbeat=HEARTBEAT_SECONDS,
                                       max_msg_size=MAX_MESSAGE)
        if not socket.can_prepare(request).ok:  # before anything wakes or runs
            raise HttpError(400, "websocket_required",
                            "exec is a WebSocket (Upgrade: websocket, subprotocol "
                            f"{SUBPROTOCOL}); `wsctl exec` speaks it")
        await self.streams.ready(ws)
        with self.streams.session(ws.key.id):
            process = await self.streams.containers.exec(ws.key.id, command, tty=tty,
                                                         stdin=stdin)
            if process is None:
                raise no_container(ws)
            outcome = Outcome(bytes={"stdin": 0, "stdout": 0, "stderr": 0})
            try:
                await socket.prepare(request)
                await bridge(socket, process, stdin=stdin, tty=tty, outcome=outcome)
            except ConnectionError:
                outcome.error = outcome.error or GONE
            except asyncio.CancelledError:  # aiohttp cancels a handler whose client left
                outcome.error = outcome.error or GONE
                raise
            except BaseException as exc:
                outcome.error = outcome.error or f"exec broke: {type(exc).__name__}"
                raise
            finally:
                await process.close()
                await self.streams.record(ws, "exec", {"command": command, "tty": tty,
                                                       "stdin": stdin}, outcome)
        return socket


async def bridge(socket: web.WebSocketResponse, process: ExecProcess, *, stdin: bool,
                 tty: bool, outcome: Outcome) -> None:
    """Pass frames both ways until the command's output ends (then send its exit code
    and close) or the client goes away (then leave the command to Docker)."""
    counts = outcome.bytes

    async def output() -> None:
        while (item := await process.read()) is not None:
            stream, data = item
            channel = STDERR if stream == 2 and not tty else STDOUT
            counts["stderr" if channel == STDERR else "stdout"] += len(data)
            await socket.send_bytes(frame(channel, data))

    async def input_() -> None:
        open_ = stdin
        async for message in socket:
            if message.type != WSMsgType.BINARY:
                continue  # text is not part of the protocol; pings are answered by aiohttp
            try:
                channel, payload = parse(message.data)
                if channel == STDIN and open_:
                    if await process.write(payload):
                        counts["stdin"] += len(payload)
                    else:
                        open_ = False  # the command stopped reading: the rest is dropped
                elif channel == RESIZE:
                    await process.resize(*parse_resize(payload))
                elif channel == CLOSE and payload[:1] == bytes((STDIN,)) and open_:
                    open_ = False
                    await process.close_stdin()
            except FrameError as exc:
                log.debug("exec: frame ignored: %s", exc)

    out = asyncio.ensure_future(output())
    into = asyncio.ensure_future(input_())
    try:
        await asyncio.wait({out, into}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not out.done():
            out.cancel()
        into.cancel()
        await asyncio.gather(out, into, return_exceptions=True)
    if out.cancelled() or isinstance(out.exception(), ConnectionError):
        outcome.error = GONE
        if tty and stdin:
            await hang_up(process)
        return
    if (failure := out.exception()) is not None:
        raise failure
    outcome.exit_code = await process.exit_code()
    with contextlib.suppress(ConnectionError):
        await socket.send_bytes(status_frame(
            outcome.exit_code,
            None if outcome.exit_code is not None else "Docker did not report an exit code"))
        await socket.close()


async def hang_up(process: ExecProcess) -> None:
    """What a terminal does when its window closes, as far as Docker lets us: Docker
    keeps an exec's terminal open after its client left (an interactive shell would
    wait for input for ever, one per dropped session), so interrupt what runs in the
    foreground, then type an end of input: a shell at its prompt exits."""
    with contextlib.suppress(Exception):
        if await process.write(b"\x03"):
            await asyncio.sleep(HANG_UP_PAUSE)  # ^C flushes the terminal's input
            await process.write(b"\x04")
