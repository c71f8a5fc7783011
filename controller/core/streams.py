"""The exec frame protocol and the checks on exec commands and copy paths, shared by
the admin API (`controller/api/exec.py`, `files.py`) and the CLI (`wsctl exec`,
`wsctl cp`). Pure: no I/O.

Exec is a WebSocket (subprotocol `v1.exec.wsctl.dev`) of binary messages, each
one frame: a channel byte, then the payload. Like Kubernetes' v5.channel.k8s.io:

    0 stdin    client -> server   bytes for the command's standard input
    1 stdout   server -> client   the command's standard output (with a TTY: all output)
    2 stderr   server -> client   its standard error (never with a TTY)
    3 status   server -> client   JSON, last: {"exitCode": 7} or {"error": "...", "exitCode": null}
    4 resize   client -> server   JSON {"width": 120, "height": 40} (columns and rows, TTY only)
  255 close    client -> server   one byte, the channel that ends: [255, 0] is the end of stdin

After the status frame the server closes the WebSocket (1000). A client that
goes away first leaves the command to Docker: its stdin is closed, and it runs
on until it ends (Docker has no API to stop an exec).
"""

from __future__ import annotations

import json
import posixpath
import urllib.parse
from collections.abc import Sequence
from typing import Any

SUBPROTOCOL = "v1.exec.wsctl.dev"

STDIN = 0
STDOUT = 1
STDERR = 2
STATUS = 3
RESIZE = 4
CLOSE = 255
CHANNELS = frozenset({STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE})

MAX_ARGS = 1024
MAX_COMMAND_QUERY = 7 * 1024
"""An exec's command line at most, URL-encoded as its `command=` parameters: it
travels in the request line, which the admin API reads up to 8190 bytes."""
MAX_PATH = 4096
MAX_TERMINAL = 10_000
"""Columns and rows of a resize at most."""
CONFIG_PATH = "/configs"
"""The token volume (core/settings.CONFIG_MOUNT): copies into it are refused."""


class FrameError(ValueError):
    """A frame, a command or a path that breaks the protocol; the message says how."""


def frame(channel: int, data: bytes = b"") -> bytes:
    if channel not in CHANNELS:
        raise FrameError(f"unknown channel {channel}")
    return bytes((channel,)) + data


def parse(message: bytes) -> tuple[int, bytes]:
    """(channel, payload) of one binary message."""
    if not message:
        raise FrameError("empty frame: a frame starts with its channel byte")
    channel = message[0]
    if channel not in CHANNELS:
        raise FrameError(f"unknown channel {channel}")
    return channel, bytes(message[1:])


def resize_frame(width: int, height: int) -> bytes:
    return frame(RESIZE, json.dumps({"width": width, "height": height}).encode())


def parse_resize(payload: bytes) -> tuple[int, int]:
    """(width, height) of a resize payload, each 1..MAX_TERMINAL."""
    try:
        size = json.loads(payload)
        width, height = size["width"], size["height"]
    except (ValueError, TypeError, KeyError):
        raise FrameError('a resize is JSON {"width": columns, "height": rows}') from None
    for value in (width, height):
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 0 < value <= MAX_TERMINAL:
            raise FrameError(f"terminal width and height are integers from 1 to {MAX_TERMINAL}")
    return width, height


def status_frame(exit_code: int | None, error: str | None = None) -> bytes:
    body: dict[str, Any] = {"exitCode": exit_code}
    if error is not None:
        body["error"] = error
    return frame(STATUS, json.dumps(body).encode())


def parse_status(payload: bytes) -> tuple[int | None, str | None]:
    """(exit code, error) of a status payload."""
    try:
        body = json.loads(payload)
    except ValueError:
        raise FrameError("a status is JSON") from None
    if not isinstance(body, dict):
        raise FrameError("a status is a JSON object")
    code, error = body.get("exitCode"), body.get("error")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise FrameError("exitCode is an integer or null")
    return code, None if error is None else str(error)


def check_command(args: Sequence[str]) -> list[str]:
    """An exec's command line as given: at least the program, at most MAX_ARGS
    arguments and MAX_COMMAND_QUERY characters URL-encoded, no NUL (it cannot reach
    execve)."""
    if not args or not args[0]:
        raise FrameError("no command: give it as repeated command= parameters "
                         "(wsctl exec NAME -- CMD ARGS...)")
    if len(args) > MAX_ARGS:
        raise FrameError(f"over {MAX_ARGS} arguments")
    encoded = len(urllib.parse.urlencode([("command", a) for a in args], errors="replace"))
    if encoded > MAX_COMMAND_QUERY:
        raise FrameError(f"the command line is too long: {encoded} characters URL-encoded, "
                         f"at most {MAX_COMMAND_QUERY} (put a long script in a file)")
    if any("\x00" in a for a in args):
        raise FrameError("a command argument holds a NUL character")
    return list(args)


def container_path(raw: str) -> str:
    """A path inside the container, absolute and normalised ('..' and '.' resolved
    textually, repeated slashes folded). Symbolic links are resolved by the
    container's own `tar`, as the agent's uid: never outside the container."""
    if not raw.startswith("/"):
        raise FrameError(f"a container path is absolute: {raw!r}")
    if "\x00" in raw:
        raise FrameError("a container path holds a NUL character")
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise FrameError(f"a container path is at most {MAX_PATH} bytes")
    path = posixpath.normpath("/" + raw.lstrip("/"))
    return path


def is_under(path: str, root: str) -> bool:
    """Whether the normalised `path` is `root` or below it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def split_path(path: str) -> tuple[str, str]:
    """(folder, name) of a normalised path other than '/', for `tar -C folder ./name`."""
    if path == "/":
        raise FrameError("copy a folder below / (a copy of the whole root is refused)")
    folder, name = posixpath.split(path)
    return folder or "/", name
