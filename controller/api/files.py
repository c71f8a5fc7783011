"""Copy into and out of a workspace's container, as tar streams.

  GET /api/v1/workspaces/{name}/files?path=/workspace/dir       the tar of that path
  PUT /api/v1/workspaces/{name}/files?path=/workspace           a tar body, unpacked there
  GET /api/v1/workspaces/{name}/files/stat?path=/workspace/x    {"type": directory|file|missing}

The container's own `tar` (and `sh` for stat) does the work, in an exec as the
agent's uid, never root: a copy reads and writes only what the agent may, files
it writes belong to the agent, and it sees the container's own mounts. Docker's
archive API would do neither: it works as root, refuses any write while the
root filesystem is read-only (`/tmp` included) and does not see the tmpfs
`/tmp` of a running container (it answers 404 for a file that is there).

Both directions stream: the body of a PUT goes to tar's stdin as it arrives, tar's
stdout goes out as it is made; at most one chunk is in the controller at a time.
A download answers only once tar has written its first 20 KiB, or ended: a
missing path is a 404 and any other tar failure a 422, with tar's message. A tar
that fails later cuts the transfer (the client sees an incomplete body, never a
short archive it could take for a whole one). Writes under /configs (the token
volume: the controller's) are refused with 403, as is a copy of `/` itself.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from controller.api._http import HttpError
from controller.api.streams import ExecProcess, Outcome, Streams, bad_request, no_container
from controller.core.model import Workspace
from controller.core.streams import (
    CONFIG_PATH,
    FrameError,
    container_path,
    is_under,
    split_path,
)

log = logging.getLogger("wsctl.api")

TAR_START = 20 * 1024
"""Bytes of a download's tar held before answering: GNU tar writes 10 KiB records,
and the archive of a missing path (with its error) is one record."""
KEEP_ERRORS = 8 * 1024
"""Bytes of tar's stderr kept for the message."""
CHUNK = 256 * 1024
STAT_SCRIPT = ('if [ -d "$1" ]; then echo directory; '
               'elif [ -e "$1" ] || [ -L "$1" ]; then echo file; else echo missing; fi')


GONE = "the client went away during the copy"


def _broke(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):  # aiohttp cancels a handler whose client left
        return GONE
    return str(exc) or type(exc).__name__


def _keep(errors: bytearray, data: bytes) -> None:
    if len(errors) < KEEP_ERRORS:
        errors += data[:KEEP_ERRORS - len(errors)]


def _said(errors: bytes) -> str:
    lines = errors.decode("utf-8", "replace").strip().splitlines()
    return "; ".join(lines[-3:]) or "no message"


def _failure(what: str, code: int | None, errors: bytes, *, download: bool = True
             ) -> HttpError:
    said = _said(errors)
    if download and "No such file or directory" in said:
        return HttpError(404, "not_found", f"{what}: {said}")
    if "executable file not found" in said:
        return HttpError(422, "copy_failed", f"{what}: the image has no `tar` (or `sh`); "
                                             f"copies need them ({said})")
    return HttpError(422, "copy_failed", f"{what}: tar in the container exited {code}: {said}")


class FilesApi:
    def __init__(self, streams: Streams) -> None:
        self.streams = streams

    def routes(self) -> list[web.RouteDef]:
        base = "/api/v1/workspaces/{name}/files"
        api = Streams.api
        return [web.get(base, api(self.download), allow_head=False),
                web.put(base, api(self.upload)),
                web.get(base + "/stat", api(self.stat), allow_head=False)]

    @staticmethod
    def _path(request: web.Request) -> str:
        raw = request.query.get("path")
        if raw is None:
            raise bad_request("path is required: an absolute path in the container")
        try:
            return container_path(raw)
        except FrameError as exc:
            raise bad_request(str(exc)) from None

    async def _open(self, ws: Workspace, command: list[str], *, stdin: bool) -> ExecProcess:
        process = await self.streams.containers.exec(ws.key.id, command, tty=False,
                                                     stdin=stdin)
        if process is None:
            raise no_container(ws)
        return process

    # ------------------------------------------------------------ stat

    async def stat(self, request: web.Request) -> web.StreamResponse:
        path = self._path(request)
        ws = await self.streams.workspace(request)
        await self.streams.ready(ws)
        with self.streams.session(ws.key.id):
            process = await self._open(ws, ["sh", "-c", STAT_SCRIPT, "wsctl-stat", path],
                                       stdin=False)
            said = bytearray()
            try:
                while (item := await process.read()) is not None:
                    _keep(said, item[1])
                code = await process.exit_code()
            finally:
                await process.close()
        kind = said.decode("utf-8", "replace").strip()
        if code != 0 or kind not in ("directory", "file", "missing"):
            raise _failure(f"stat of {path}", code, bytes(said))
        return web.json_response({"path": path, "type": kind})

    # ------------------------------------------------------------ download

    async def download(self, request: web.Request) -> web.StreamResponse:
        path = self._path(request)
        try:
            folder, name = split_path(path)
        except FrameError as exc:
            raise bad_request(str(exc)) from None
        ws = await self.streams.workspace(request)
        await self.streams.ready(ws)
        outcome = Outcome(bytes={"tar": 0})
        with self.streams.session(ws.key.id):
            process = await self._open(ws, ["tar", "-c", "-f", "-", "-C", folder, "./" + name],
                                       stdin=False)
            try:
                return await self._send(request, process, path, outcome)
            except BaseException as exc:
                outcome.error = outcome.error or _broke(exc)
                raise
            finally:
                await process.close()
                await self.streams.record(ws, "cp", {"direction": "download", "path": path},
                                          outcome)

    @staticmethod
    async def _send(request: web.Request, process: ExecProcess, path: str,
                    outcome: Outcome) -> web.StreamResponse:
        head, errors, ended = bytearray(), bytearray(), False
        while len(head) < TAR_START:
            item = await process.read()
            if item is None:
                ended = True
                break
            if item[0] == 2:
                _keep(errors, item[1])
            else:
                head += item[1]
        if ended:
            outcome.exit_code = await process.exit_code()
            if outcome.exit_code != 0:
                raise _failure(f"copy of {path}", outcome.exit_code, bytes(errors))
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            await response.write(bytes(head))
            outcome.bytes["tar"] = len(head)
            del head
            if not ended:
                while (item := await process.read()) is not None:
                    if item[0] == 2:
                        _keep(errors, item[1])
                        continue
                    await response.write(item[1])
                    outcome.bytes["tar"] += len(item[1])
                outcome.exit_code = await process.exit_code()
            if outcome.exit_code != 0:
                outcome.error = _failure(f"copy of {path}", outcome.exit_code,
                                         bytes(errors)).message
                log.warning("copy of %s cut short: %s", path, outcome.error)
                if request.transport is not None:  # the client sees an incomplete body
                    request.transport.close()
                return response
            await response.write_eof()
        except ConnectionError:
            outcome.error = GONE
        return response

    # ------------------------------------------------------------ upload

    async def upload(self, request: web.Request) -> web.StreamResponse:
        path = self._path(request)
        if is_under(path, CONFIG_PATH):
            raise HttpError(403, "forbidden", f"{CONFIG_PATH} is the token volume, the "
                                              "controller's: copies into it are refused")
        ws = await self.streams.workspace(request)
        await self.streams.ready(ws)
        outcome = Outcome(bytes={"tar": 0})
        with self.streams.session(ws.key.id):
            process = await self._open(ws, ["tar", "-x", "-f", "-", "-C", path], stdin=True)
            errors = bytearray()
            try:
                await self._receive(request, process, outcome, errors)
            except ConnectionError:  # the body broke off: the client is gone
                outcome.error = GONE
            except BaseException as exc:
                outcome.error = outcome.error or _broke(exc)
                raise
            finally:
                await process.close()
                if outcome.exit_code not in (0, None) and outcome.error is None:
                    outcome.error = _failure(f"copy into {path}", outcome.exit_code,
                                             bytes(errors), download=False).message
                await self.streams.record(ws, "cp", {"direction": "upload", "path": path},
                                          outcome)
        if outcome.error == GONE:
            return web.Response(status=400)  # nobody reads it
        if outcome.exit_code != 0:
            raise _failure(f"copy into {path}", outcome.exit_code, bytes(errors), download=False)
        return web.json_response({"path": path, "bytes": outcome.bytes["tar"]})

    @staticmethod
    async def _receive(request: web.Request, process: ExecProcess, outcome: Outcome,
                       errors: bytearray) -> None:
        async def collect() -> None:
            while (item := await process.read()) is not None:
                _keep(errors, item[1])

        said = asyncio.ensure_future(collect())
        try:
            reading = True
            async for chunk in request.content.iter_chunked(CHUNK):
                if reading and await process.write(chunk):
                    outcome.bytes["tar"] += len(chunk)
                else:
                    # tar ended early (it failed, or the archive ended before the
                    # body): read the rest so the client gets the answer.
                    reading = False
            await process.close_stdin()
            await said
        finally:
            said.cancel()
        outcome.exit_code = await process.exit_code()
