"""What the admin API's streaming routes share: exec (`exec.py`, a WebSocket), copy
(`files.py`, tar over HTTP) and `GET .../logs?follow=true` (here).

They reach Docker through `Containers` (the app layer's `EngineLookups`): only the
workspace's newest running container, and every command as the agent's uid
(never root). Each exec and copy is one activity row of the workspace (source
`user`): the command or path and the tar's command redacted, the byte counts,
the exit code and the duration. At most `max_sessions` streams are open at once
(429 `too_many_streams` beyond); nothing of a stream is held in memory beyond one
chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from controller.api._http import HttpError
from controller.core import origin, redact
from controller.core.errors import WsctlError
from controller.core.model import DEFAULT_NAMESPACE, DNS1123_LABEL, Workspace

log = logging.getLogger("wsctl.api")

MAX_SESSIONS = 64
"""Exec, copy and log-follow streams open at once at most (two threads each)."""
MAX_LINE = 64 * 1024
"""A followed log line longer than this is redacted and sent in pieces."""


class ExecProcess(Protocol):
    """One command running in a workspace's container (the adapter's ExecStream)."""

    async def read(self) -> tuple[int, bytes] | None: ...
    async def write(self, data: bytes) -> bool: ...
    async def close_stdin(self) -> None: ...
    async def resize(self, width: int, height: int) -> None: ...
    async def exit_code(self) -> int | None: ...
    async def close(self) -> None: ...


class LogFollow(Protocol):
    async def read(self) -> bytes | None: ...
    async def close(self) -> None: ...


class Containers(Protocol):
    """What the streaming routes ask of Docker about one workspace."""

    async def running(self, workspace_id: str) -> bool: ...
    async def exec(self, workspace_id: str, command: Sequence[str], *, tty: bool,
                   stdin: bool) -> ExecProcess | None: ...
    async def follow_logs(self, workspace_id: str, tail: int) -> LogFollow | None: ...


class StreamsStore(Protocol):
    def get_workspace(self, namespace: str, name: str) -> Awaitable[Workspace | None]: ...
    def append_activity(self, workspace_id: str, source: str, *,
                        method: str | None = None, request: Any = None,
                        response: Any = None, status: str | None = None,
                        error: str | None = None) -> Awaitable[int]: ...


def bad_request(message: str) -> HttpError:
    return HttpError(400, "invalid_request", message)


def bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise bad_request(f"{name} must be true or false")
    return raw in ("true", "1")


def no_container(ws: Workspace) -> HttpError:
    return HttpError(409, "no_running_container",
                     f"workspace {ws.key} has no running container (starting, suspended, "
                     f"failed or stopped? see wsctl describe {ws.metadata.name})")


@dataclass
class Outcome:
    """What one exec or copy did, for its activity row."""

    exit_code: int | None = None
    bytes: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    started: float = field(default_factory=time.monotonic)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Streams:
    """The shared part of the streaming routes: lookups, the session limit, activity."""

    def __init__(self, store: StreamsStore, containers: Containers, *,
                 max_sessions: int = MAX_SESSIONS,
                 wake: Callable[[Workspace], Awaitable[object]] | None = None,
                 busy: Callable[[str], AbstractContextManager[object]] | None = None) -> None:
        self.store = store
        self.containers = containers
        self.max_sessions = max_sessions
        self.wake = wake
        """Called before a stream of a workspace that is not being deleted (wakes a
        suspended one); None: nothing to do."""
        self.busy = busy
        """Around each exec and copy: the workspace is in use (not idle) meanwhile."""
        self.open_sessions = 0

    @staticmethod
    def api(handler: Handler) -> Handler:
        """`handler` with what it sends to the store counted under origin `api`."""
        @functools.wraps(handler)
        async def attributed(request: web.Request) -> web.StreamResponse:
            with origin.working_for(origin.API):
                return await handler(request)
        return attributed

    async def workspace(self, request: web.Request) -> Workspace:
        """The workspace of the route (400 for a bad name or namespace, 404 if none)."""
        name = request.match_info["name"]
        namespace = request.query.get("namespace", DEFAULT_NAMESPACE)
        for what, value in (("name", name), ("namespace", namespace)):
            if not DNS1123_LABEL.match(value) or len(value) > 63:
                raise bad_request(f"{what} {value!r} is not a DNS-1123 label")
        ws = await self.store.get_workspace(namespace, name)
        if ws is None:
            raise HttpError(404, "not_found", f"workspace {namespace}/{name} not found")
        return ws

    async def ready(self, ws: Workspace) -> None:
        """Wake the workspace if that is wired, then make sure it has a running
        container (409 if not): before a WebSocket is accepted or a tar started."""
        if self.wake is not None and ws.metadata.deletion_timestamp is None:
            await self.wake(ws)
        if not await self.containers.running(ws.key.id):
            raise no_container(ws)

    @contextlib.contextmanager
    def session(self, workspace_id: str, *, in_use: bool = True) -> Iterator[None]:
        """One open stream; 429 when `max_sessions` are open. `in_use`: the workspace
        counts as busy meanwhile (an exec or copy; watching its logs does not)."""
        if self.open_sessions >= self.max_sessions:
            raise HttpError(429, "too_many_streams",
                            f"{self.max_sessions} exec, copy and log streams are open; "
                            "retry when one ended", retry_after=1)
        self.open_sessions += 1
        try:
            busy = self.busy if in_use else None
            with busy(workspace_id) if busy is not None else contextlib.nullcontext():
                yield
        finally:
            self.open_sessions -= 1

    async def record(self, ws: Workspace, method: str, request: dict[str, Any],
                     outcome: Outcome) -> None:
        """The activity row of one exec or copy, redacted. A stream already answered
        cannot turn into an error answer: a store that is away is logged."""
        ok = outcome.error is None and outcome.exit_code == 0
        error = outcome.error
        if error is None and outcome.exit_code != 0:
            error = f"exit code {outcome.exit_code}"
        response = {"exitCode": outcome.exit_code, "bytes": outcome.bytes,
                    "seconds": round(time.monotonic() - outcome.started, 3)}
        try:
            await self.store.append_activity(
                ws.key.id, "user", method=method, request=redact.redact_json(request),
                response=response, status="ok" if ok else "error",
                error=None if error is None else redact.redact(error))
        except WsctlError as exc:
            log.warning("%s: %s not recorded in the activity: %s", ws.key, method, exc)

    # ------------------------------------------------------------ logs -f

    async def follow_logs(self, request: web.Request, ws: Workspace,
                          tail: int) -> web.StreamResponse:
        """`GET .../logs?follow=true`: the newest container's logs as they are written,
        chunked, redacted line by line, until the container stops or the client
        goes away."""
        follower = await self.containers.follow_logs(ws.key.id, tail)
        if follower is None:
            raise HttpError(404, "not_found", f"workspace {ws.key} has no container")
        try:
            with self.session(ws.key.id, in_use=False):
                response = web.StreamResponse(
                    headers={"Content-Type": "text/plain; charset=utf-8"})
                response.enable_chunked_encoding()
                lines = LineRedactor()
                with contextlib.suppress(ConnectionError):
                    await response.prepare(request)
                    async with contextlib.aclosing(until_gone(request, follower.read)) as chunks:
                        async for chunk in chunks:
                            if text := lines.feed(chunk):
                                await response.write(text)
                    if text := lines.flush():
                        await response.write(text)
                    await response.write_eof()
                return response
        finally:
            await follower.close()


async def until_gone(request: web.Request,
                     read: Callable[[], Awaitable[bytes | None]]) -> AsyncGenerator[bytes]:
    """What `read()` gives until it gives None or the client's connection closes
    (noticed within a second even while nothing is read)."""
    async def gone() -> None:
        # aiohttp has no event for a client that went away: look every second.
        while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(1.0)

    watcher = asyncio.ensure_future(gone())
    try:
        while True:
            reading = asyncio.ensure_future(read())
            await asyncio.wait({reading, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                reading.cancel()
                return
            chunk = reading.result()
            if chunk is None:
                return
            yield chunk
    finally:
        watcher.cancel()


class LineRedactor:
    """Redacts a byte stream line by line: a secret split across two chunks is still
    found. A line over MAX_LINE is passed on in pieces."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> bytes:
        buffer = self._partial + data
        cut = buffer.rfind(b"\n") + 1
        if cut == 0 and len(buffer) > MAX_LINE:
            cut = len(buffer)
        self._partial = buffer[cut:]
        return _redacted(buffer[:cut])

    def flush(self) -> bytes:
        rest, self._partial = self._partial, b""
        return _redacted(rest)


def _redacted(data: bytes) -> bytes:
    if not data:
        return b""
    return redact.redact(data.decode("utf-8", "surrogateescape")).encode(
        "utf-8", "surrogateescape")
