"""Long-lived Docker streams: an exec attached to its process, and a container's logs
followed. Used through `DockerEngine.exec_open` and `DockerEngine.follow_logs`.

The short calls (create, inspect, resize) go through the engine's pool like every
other call. The stream itself can stay open for hours (an interactive shell), so
its blocking socket reads and writes run on threads of its own, one reading and
one writing, never on the engine's pool (whose threads the reconciles need) nor
asyncio's default executor. Nothing is buffered beyond one chunk: the caller
awaits each read and write, so a slow consumer slows the stream down.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from docker.errors import APIError, NotFound

from controller.core.errors import WsctlError

CHUNK = 64 * 1024
"""Bytes read from a stream at once at most."""
EXIT_CODE_WAIT_SECONDS = 5.0
"""How long after its output ended an exec may still be reported running."""

Run = Callable[..., Awaitable[Any]]
"""`DockerEngine._run`: a blocking call on the engine's pool, counted by name."""


class StreamError(WsctlError):
    """Docker refused to start a stream for a reason other than a missing container."""


class Demultiplexer:
    """Docker's multiplexed stream, parsed as it arrives: each frame is an 8-byte
    header (stream: 1 stdout, 2 stderr; three zero bytes; the payload's length,
    big-endian) and the payload. A payload may arrive in pieces; each piece is
    handed on as it comes, so nothing waits for a whole frame."""

    def __init__(self) -> None:
        self._header = bytearray()
        self._stream = 0
        self._remaining = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        i = 0
        while i < len(data):
            if self._remaining == 0:
                take = min(8 - len(self._header), len(data) - i)
                self._header += data[i:i + take]
                i += take
                if len(self._header) == 8:
                    self._stream, self._remaining = struct.unpack(">BxxxL", self._header)
                    self._header.clear()
                continue
            take = min(self._remaining, len(data) - i)
            out.append((self._stream, data[i:i + take]))
            i += take
            self._remaining -= take
        return out


class ExecStream:
    """One exec, attached: `read()` its output, `write()` its stdin, `resize()` its TTY,
    `exit_code()` once the output ended; `close()` always."""

    def __init__(self, run: Run, api: Any, exec_id: str, response: Any, *, tty: bool) -> None:
        self._run = run
        self._api = api
        self.exec_id = exec_id
        self.tty = tty
        self._response = response
        # Read through http.client's buffered reader, not the raw socket under it
        # (what docker-py's exec_start(socket=True) returns): parsing the 101 answer
        # may have read the command's first output bytes into that buffer.
        self._file = response.raw._fp.fp
        self._socket: socket.socket = self._file.raw._sock
        self._socket.settimeout(None)  # the client's 60 s read timeout would end a quiet shell
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="docker-exec-read")
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="docker-exec-write")
        self._demux = None if tty else Demultiplexer()
        self._pending: deque[tuple[int, bytes]] = deque()
        self._closed = False

    def _read_chunk(self) -> bytes:
        try:
            data: bytes = self._file.read1(CHUNK)
            return data
        except (OSError, ValueError):  # closed under us: the end
            return b""

    async def read(self) -> tuple[int, bytes] | None:
        """(stream, bytes) of output: stream 1 stdout (every byte with a TTY) or 2
        stderr; None at the end of the output."""
        loop = asyncio.get_running_loop()
        while not self._pending:
            if self._closed:
                return None
            data = await loop.run_in_executor(self._reads, self._read_chunk)
            if not data:
                return None
            if self._demux is None:
                return 1, data
            self._pending.extend(self._demux.feed(data))
        return self._pending.popleft()

    def _send(self, data: bytes) -> bool:
        try:
            self._socket.sendall(data)
            return True
        except OSError:  # the command ended (or closed its stdin)
            return False

    async def write(self, data: bytes) -> bool:
        """Send bytes to the command's stdin; False when it no longer reads them."""
        if self._closed:
            return False
        return await asyncio.get_running_loop().run_in_executor(self._writes, self._send, data)

    def _shut(self, how: int) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(how)

    async def close_stdin(self) -> None:
        """End of input: the command reads EOF (after every byte written before)."""
        if not self._closed:
            await asyncio.get_running_loop().run_in_executor(self._writes, self._shut,
                                                             socket.SHUT_WR)

    async def resize(self, width: int, height: int) -> None:
        if not self.tty or self._closed:
            return
        with contextlib.suppress(NotFound, APIError):  # ended meanwhile: nothing to resize
            await self._run("exec_resize", self._api.exec_resize, self.exec_id,
                            height=height, width=width)

    async def exit_code(self) -> int | None:
        """The command's exit code once it ended (None if Docker does not say within
        EXIT_CODE_WAIT_SECONDS, or the exec is gone)."""
        deadline = time.monotonic() + EXIT_CODE_WAIT_SECONDS
        while True:
            try:
                info = await self._run("exec_inspect", self._api.exec_inspect, self.exec_id)
            except (NotFound, APIError):
                return None
            if not info.get("Running"):
                code = info.get("ExitCode")
                return code if isinstance(code, int) else None
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Close the connection: a pending read ends, the command's stdin closes."""
        if self._closed:
            return
        self._closed = True
        self._shut(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self._response.close()
        self._reads.shutdown(wait=False)
        self._writes.shutdown(wait=False)


def _missing(exc: APIError) -> bool:
    """Docker's answer for a container that is gone (404) or not running (409)."""
    return isinstance(exc, NotFound) or exc.status_code in (404, 409)


async def open_exec(run: Run, api: Any, container: str, command: Sequence[str], *,
                    user: str, tty: bool, stdin: bool) -> ExecStream | None:
    """Create and start an exec in `container` as `user`, attached; None when the
    container is gone or not running."""
    def start() -> tuple[str, Any] | None:
        try:
            created = api.exec_create(container, list(command), stdout=True, stderr=True,
                                      stdin=stdin, tty=tty, user=user)
            exec_id = str(created["Id"])
            # docker-py's exec_start(socket=True), reading through the buffered reader
            # (see ExecStream): the same request, the response kept whole.
            response = api._post_json(
                api._url("/exec/{0}/start", exec_id),
                headers={"Connection": "Upgrade", "Upgrade": "tcp"},
                data={"Tty": tty, "Detach": False}, stream=True)
            api._raise_for_status(response)
        except APIError as exc:
            if _missing(exc):
                return None
            raise StreamError(f"exec in {container[:12]}: {exc.explanation}") from None
        return exec_id, response

    started = await run("exec", start)
    if started is None:
        return None
    exec_id, response = started
    return ExecStream(run, api, exec_id, response, tty=tty)


class LogFollower:
    """A container's logs as they are written, until it stops or `close()`."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="docker-logs")
        self._closed = False

    def _next(self) -> bytes | None:
        try:
            chunk = next(self._stream, None)
        except (OSError, ValueError):
            return None
        return chunk if isinstance(chunk, bytes) else None

    async def read(self) -> bytes | None:
        """The next piece of log (stdout and stderr as written); None at the end."""
        if self._closed:
            return None
        return await asyncio.get_running_loop().run_in_executor(self._reads, self._next)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._stream.close()  # a pending read ends
        self._reads.shutdown(wait=False)


async def follow_logs(run: Run, api: Any, container: str, tail: int) -> LogFollower | None:
    """Follow `container`'s logs from its last `tail` lines; None when it is gone."""
    def open_stream() -> Any:
        try:
            # docker-py turns the socket's read timeout off for a followed stream.
            return api.logs(container, stdout=True, stderr=True, stream=True, follow=True,
                            tail=tail)
        except APIError as exc:
            if _missing(exc):
                return None
            raise StreamError(f"logs of {container[:12]}: {exc.explanation}") from None

    stream = await run("logs_follow", open_stream)
    return None if stream is None else LogFollower(stream)
