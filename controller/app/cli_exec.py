"""The streaming client commands: `wsctl exec`, `wsctl cp` and `wsctl logs -f`.

`exec` speaks the WebSocket of `GET .../exec` (frames: controller/core/streams.py)
with aiohttp's client, imported when the command runs; `cp` and `logs -f` are plain
HTTP streams (urllib). Nothing is read whole: a copy goes through in chunks, as a
tar made (or unpacked) as it goes.

`wsctl cp` follows `docker cp`: a destination that is an existing folder receives
the source under its own name; otherwise the destination is the new name (its
folder must exist). `-` as the local side is a tar on stdin or stdout.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from controller.app.cli_workspaces import CommandError, client
from controller.app.client import Client, ClientError
from controller.core import streams as proto
from controller.core.names import DNS1123_LABEL
from controller.core.settings import AGENT_UID

if TYPE_CHECKING:
    import tarfile

    from aiohttp import ClientWebSocketResponse

CHUNK = 256 * 1024
STDIN_CHUNK = 64 * 1024
COPY_READ_TIMEOUT = 300.0
"""Seconds a copy may go without a byte before it is given up."""


# ---------------------------------------------------------------------- exec


def exec_command(command: list[str]) -> list[str]:
    """The command line given after `--`, checked as the controller will."""
    try:
        return proto.check_command(command)
    except proto.FrameError as exc:
        raise CommandError(f"{exc} (wsctl exec NAME [-i] [-t] -- CMD ARGS...)") from None


def cmd_exec(args: argparse.Namespace) -> int:
    command = exec_command(args.command)
    if args.tty and not os.isatty(sys.stdin.fileno()):
        raise CommandError("-t needs a terminal: standard input is not one "
                           "(drop -t; with -i alone input is piped)")
    import asyncio

    return asyncio.run(_exec(client(args), args.namespace, args.name, command,
                             tty=args.tty, stdin=args.stdin))


def _refused(status: int, namespace: str, name: str) -> str:
    """The handshake's refusal, in words (a WebSocket client does not see the body)."""
    return {
        400: "the controller refused the request (400); is it older than this wsctl?",
        401: "the admin token was refused (401): is it this controller's data dir?",
        404: f"workspace {namespace}/{name} not found",
        409: f"workspace {namespace}/{name} has no running container (starting, suspended, "
             f"failed or stopped? see wsctl describe {name})",
        429: "too many exec, copy and log streams are open on the controller; retry",
        503: "the controller cannot reach Docker or its database right now; retry",
        504: f"workspace {namespace}/{name} was suspended and did not wake in time",
    }.get(status, f"the controller refused the exec ({status})")


async def _exec(api: Client, namespace: str, name: str, command: list[str], *, tty: bool,
                stdin: bool) -> int:
    import aiohttp

    query = [("namespace", namespace), *(("command", c) for c in command),
             ("tty", str(tty).lower()), ("stdin", str(stdin).lower())]
    async with aiohttp.ClientSession() as session:
        try:
            socket = await session.ws_connect(
                f"{api.server}/api/v1/workspaces/{name}/exec", params=query,
                headers={"Authorization": f"Bearer {api.token}"},
                protocols=(proto.SUBPROTOCOL,), heartbeat=30.0, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            raise CommandError(_refused(exc.status, namespace, name)) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise CommandError(f"no wsctl server answers at {api.server} ({exc}); "
                               "start one with `wsctl run` or set --server") from None
        async with socket:
            return await _attached(socket, tty=tty, stdin=stdin)


async def _attached(socket: ClientWebSocketResponse, *, tty: bool, stdin: bool) -> int:
    import asyncio
    import contextlib
    import signal

    from aiohttp import WSMsgType

    loop = asyncio.get_running_loop()
    restore = _raw_terminal() if tty and stdin else None
    tasks: list[asyncio.Task[None]] = []

    async def resize() -> None:
        size = _terminal_size()
        if size is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await socket.send_bytes(proto.resize_frame(*size))

    status: tuple[int | None, str | None] | None = None
    broken_pipe = False
    try:
        if tty:
            tasks.append(asyncio.ensure_future(resize()))
            loop.add_signal_handler(signal.SIGWINCH,
                                    lambda: tasks.append(asyncio.ensure_future(resize())))
        if stdin:
            tasks.append(asyncio.ensure_future(_send_stdin(socket)))
        out, err = sys.stdout.buffer, sys.stderr.buffer
        async for message in socket:
            if message.type != WSMsgType.BINARY:
                continue
            channel, payload = proto.parse(message.data)
            try:
                if channel == proto.STDOUT:
                    out.write(payload)
                    out.flush()
                elif channel == proto.STDERR:
                    err.write(payload)
                    err.flush()
            except BrokenPipeError:  # `wsctl exec ... | head`: the reader is done
                broken_pipe = True
                break
            if channel == proto.STATUS:
                status = proto.parse_status(payload)
    finally:
        if tty:
            loop.remove_signal_handler(signal.SIGWINCH)
        for task in tasks:
            task.cancel()
        if restore is not None:
            restore()
    if broken_pipe:
        _quiet_stdout()
        return 141  # as a shell reports a writer killed by SIGPIPE
    if status is None:
        raise CommandError("the connection to the controller ended before the command did "
                           "(the command may still be running)")
    code, error = status
    if code is None:
        raise CommandError(f"exec: {error or 'no exit code'}")
    return code


async def _send_stdin(socket: ClientWebSocketResponse) -> None:
    """Our stdin to the command's, read by a thread of its own (a blocking read of a
    terminal or pipe cannot be cancelled; it dies with the process), with at most a
    few chunks in flight; the end of our input is the end of the command's."""
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
    fd = sys.stdin.fileno()

    def read() -> None:
        while True:
            try:
                data = os.read(fd, STDIN_CHUNK)
            except OSError:
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(data), loop).result()
            except Exception:  # the loop is gone: the command ended
                return
            if not data:
                return

    threading.Thread(target=read, name="wsctl-stdin", daemon=True).start()
    try:
        while data := await chunks.get():
            await socket.send_bytes(proto.frame(proto.STDIN, data))
        await socket.send_bytes(proto.frame(proto.CLOSE, bytes((proto.STDIN,))))
    except (ConnectionError, RuntimeError):
        pass  # the connection closed: the command ended


def _quiet_stdout() -> None:
    """Stdout's reader is gone: point it at /dev/null so that flushing it at exit
    does not print a second error (what Python's docs advise)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _terminal_size() -> tuple[int, int] | None:
    for fd in (sys.stdout.fileno(), sys.stdin.fileno()):
        try:
            size = os.get_terminal_size(fd)
            return size.columns, size.lines
        except OSError:
            continue
    return None


def _raw_terminal() -> Callable[[], None]:
    """Put the terminal on stdin in raw mode (keys go to the command as typed, Ctrl-C
    included); returns what puts it back."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: keys typed ahead are kept

    def restore() -> None:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return restore


# ---------------------------------------------------------------------- cp


@dataclass(frozen=True)
class Location:
    """One side of `wsctl cp`: `NAME:/path` in a workspace, or a local path (`-`: stdio)."""

    path: str
    workspace: str | None = None

    def __str__(self) -> str:
        return f"{self.workspace}:{self.path}" if self.workspace else self.path


def location(raw: str) -> Location:
    if raw == "-" or raw.startswith(("/", ".", "~")):
        return Location(raw)
    name, colon, path = raw.partition(":")
    if not colon or not DNS1123_LABEL.match(name) or len(name) > 63:
        return Location(raw)
    if not path.startswith("/"):
        raise CommandError(f"{raw}: a workspace path is absolute ({name}:/workspace/...); "
                           f"for a local file with ':' in its name write ./{raw}")
    return Location(path, name)


def cmd_cp(args: argparse.Namespace) -> int:
    src, dst = location(args.src), location(args.dst)
    if (src.workspace is None) == (dst.workspace is None):
        raise CommandError("one side of wsctl cp is NAME:/path in a workspace and the other "
                           "a local path (or -)")
    api = client(args)
    progress = Progress(str(src), str(dst), quiet=args.quiet)
    try:
        if src.workspace is not None:
            _download(api, args.namespace, src, dst.path, progress)
        else:
            _upload(api, args.namespace, src.path, dst, progress)
    except ClientError as exc:
        raise CommandError(str(exc)) from None
    progress.done()
    return 0


class Progress:
    """Bytes copied, shown on stderr (a terminal) every half second, and one line at
    the end unless quiet."""

    def __init__(self, src: str, dst: str, *, quiet: bool) -> None:
        self.what = f"{src} -> {dst}"
        self.quiet = quiet
        self.live = not quiet and sys.stderr.isatty()
        self.bytes = 0
        self.started = time.monotonic()
        self._shown = self.started

    def add(self, count: int) -> None:
        self.bytes += count
        now = time.monotonic()
        if self.live and now - self._shown >= 0.5:
            self._shown = now
            rate = self.bytes / max(now - self.started, 1e-6)
            print(f"\r{self.what}: {_size(self.bytes)} ({_size(int(rate))}/s) ", end="",
                  file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.quiet:
            return
        seconds = time.monotonic() - self.started
        print(f"{chr(13) if self.live else ''}copied {_size(self.bytes)} (tar) {self.what} "
              f"in {seconds:.1f}s", file=sys.stderr, flush=True)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


class _Counted:
    """A readable that counts what is read through it (tarfile reads from it)."""

    def __init__(self, raw: IO[bytes] | Any, progress: Progress) -> None:
        self.raw = raw
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.raw.read(size)
        self.progress.add(len(data))
        return data


def _download(api: Client, namespace: str, src: Location, dst: str,
              progress: Progress) -> None:
    import http.client
    import shutil
    import tarfile

    assert src.workspace is not None
    try:
        path = proto.container_path(src.path)
    except proto.FrameError as exc:
        raise CommandError(str(exc)) from None
    target = None if dst == "-" else Path(dst)
    if target is not None and not target.is_dir() and not target.parent.is_dir():
        raise CommandError(f"{target.parent} is not a folder here")
    response = api.open("GET", f"/api/v1/workspaces/{src.workspace}/files",
                        {"namespace": namespace, "path": path}, timeout=COPY_READ_TIMEOUT)
    stream = _Counted(response, progress)
    try:
        with response:
            if target is None:
                try:
                    shutil.copyfileobj(stream, sys.stdout.buffer, CHUNK)
                    sys.stdout.buffer.flush()
                except BrokenPipeError:
                    _quiet_stdout()
                    raise CommandError("standard output was closed before the copy "
                                       "ended") from None
                return
            folder, top = (target, posixpath.basename(path)) if target.is_dir() \
                else (target.parent, target.name)
            with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
                # S202: every member passes tarfile's `data` filter (_safe)
                tar.extractall(folder, members=_renamed(tar, top), filter=_safe)  # noqa: S202
            while stream.read(CHUNK):  # tar's padding after the end: read to the end, so
                pass                   # a copy the controller cut is noticed
    except (http.client.HTTPException, tarfile.ReadError) as exc:
        raise CommandError(f"the copy of {src} was cut short ({type(exc).__name__}): tar in "
                           f"the container failed; see wsctl activity {src.workspace}") from None
    except TimeoutError:
        raise CommandError(f"the copy of {src} stalled for {COPY_READ_TIMEOUT:.0f}s") from None


def _renamed(tar: tarfile.TarFile, top: str) -> Iterator[tarfile.TarInfo]:
    """The archive's members (`./name`, `./name/...`) under `top` instead of `name`."""
    def rename(path: str) -> str:
        _, _, rest = path.removeprefix("./").partition("/")
        return f"{top}/{rest}" if rest else top

    for member in tar:
        member.name = rename(member.name)
        if member.islnk():
            member.linkname = rename(member.linkname)
        yield member


def _safe(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's `data` filter (nothing outside the destination, no device files, no
    setuid bits); a member it refuses is skipped with a warning, not the whole copy."""
    import tarfile

    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError as exc:
        print(f"warning: skipped {member.name}: {exc}", file=sys.stderr)
        return None


def _stat(api: Client, namespace: str, workspace: str, path: str) -> str:
    answer = api.request("GET", f"/api/v1/workspaces/{workspace}/files/stat",
                         query={"namespace": namespace, "path": path})
    return str(answer["type"])


def _upload(api: Client, namespace: str, src: str, dst: Location,
            progress: Progress) -> None:
    import json

    assert dst.workspace is not None
    try:
        path = proto.container_path(dst.path)
    except proto.FrameError as exc:
        raise CommandError(str(exc)) from None
    kind = _stat(api, namespace, dst.workspace, path)
    body: Iterable[bytes]
    if src == "-":
        if kind != "directory":
            raise CommandError(f"{dst} is not a folder (a tar on stdin is unpacked into one)")
        folder = path
        body = iter(lambda: sys.stdin.buffer.read(CHUNK), b"")
    else:
        local = Path(src)
        if not local.exists() and not local.is_symlink():
            raise CommandError(f"{src}: no such file or folder here")
        own = local.name if local.name not in ("", ".", "..") else local.resolve().name
        if kind == "directory":
            folder, top = path, own
        elif dst.path.endswith("/"):
            raise CommandError(f"{dst} is not a folder in the workspace")
        elif kind == "file" and local.is_dir():
            raise CommandError(f"cannot copy the folder {src} onto the file {dst}")
        else:
            folder, top = posixpath.split(path)
            if kind == "missing" and _stat(api, namespace, dst.workspace, folder) != "directory":
                raise CommandError(f"{dst.workspace}:{folder} is not a folder in the workspace")
        body = _tar_of(local, top)

    def counted() -> Iterator[bytes]:
        for chunk in body:
            progress.add(len(chunk))
            yield chunk

    with api.open("PUT", f"/api/v1/workspaces/{dst.workspace}/files",
                  {"namespace": namespace, "path": folder}, counted(),
                  {"Content-Type": "application/x-tar"}, timeout=COPY_READ_TIMEOUT) as answer:
        json.loads(answer.read() or b"{}")


def _tar_of(local: Path, top: str) -> Iterator[bytes]:
    """A tar of `local` named `top`, made by a thread as it is read: never whole in
    memory. Members belong to the agent's uid (as they will in the workspace)."""
    import tarfile
    import threading

    failed: list[BaseException] = []
    read_end, write_end = os.pipe()

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = AGENT_UID
        info.uname = info.gname = ""
        return info

    def make() -> None:
        try:
            with os.fdopen(write_end, "wb", buffering=CHUNK) as out, \
                    tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                tar.add(local, arcname=top, filter=owned)
        except BrokenPipeError:
            pass  # the request was given up
        except BaseException as exc:
            failed.append(exc)

    maker = threading.Thread(target=make, name="wsctl-tar", daemon=True)
    maker.start()
    with os.fdopen(read_end, "rb") as made:
        while chunk := made.read(CHUNK):
            yield chunk
    maker.join()
    if failed:
        raise CommandError(f"cannot read {local}: {failed[0]}")


# ---------------------------------------------------------------------- logs -f


def follow_logs(args: argparse.Namespace) -> int:
    """Print the logs as they are written until the container stops; Ctrl-C ends it (0)."""
    import http.client

    try:
        response = client(args).open(
            "GET", f"/api/v1/workspaces/{args.name}/logs",
            {"namespace": args.namespace, "tail": str(args.tail), "follow": "true"}, timeout=None)
    except ClientError as exc:
        raise CommandError(str(exc)) from None
    out = sys.stdout.buffer
    try:
        with response:
            while chunk := response.read1(CHUNK):
                out.write(chunk)
                out.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `wsctl logs -f NAME | grep -m1 ...`: the reader is done
        _quiet_stdout()
        return 0
    except (http.client.HTTPException, OSError) as exc:
        raise CommandError(f"the log stream broke: {type(exc).__name__}") from None
    return 0


# ---------------------------------------------------------------------- parser


class _ExecParser(argparse.ArgumentParser):
    """Everything after the first `--` is the command, whatever it looks like; options
    go anywhere before it (`wsctl exec NAME -it -- sh`). argparse alone would end the
    command positional at the first option after NAME."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        given = list(sys.argv[1:] if args is None else args)
        if "--" not in given:
            return super().parse_known_args(given, namespace)
        cut = given.index("--")
        parsed, extras = super().parse_known_args(given[:cut], namespace)
        parsed.command = [*parsed.command, *given[cut + 1:]]
        return parsed, extras


def add_stream_commands(add: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    p = add("exec", cmd_exec, "run a command in a workspace's container, as the agent's "
            "user; its exit code is wsctl's (wsctl exec NAME [-i] [-t] -- CMD ARGS...)")
    p.__class__ = _ExecParser
    p.add_argument("-i", "--stdin", action="store_true", help="pass standard input on")
    p.add_argument("-t", "--tty", action="store_true",
                   help="give the command a terminal (needs one on stdin; with -i: raw mode)")
    p.add_argument("name")
    p.add_argument("command", nargs="*", help="-- then the command and its arguments")
    p = add("cp", cmd_cp, "copy files and folders between a workspace and here "
            "(NAME:/path on one side; - is a tar on stdin/stdout)")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
