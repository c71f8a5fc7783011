"""One line per event on stdout, flushed. Never pass secret values here."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.parse
from typing import Protocol

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40}


class Stream(Protocol):
    def write(self, s: str, /) -> int: ...
    def flush(self) -> None: ...


_lock = threading.Lock()
_threshold = 20
_stream: Stream | None = None


def configure(level: str, stream: Stream | None = None) -> None:
    global _threshold, _stream
    _threshold = _LEVELS.get(level.lower(), 20)
    _stream = stream


def _fmt(value: object) -> str:
    text = str(value)
    if text == "" or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)
    return text


def log(level: str, event: str, **fields: object) -> None:
    if _LEVELS.get(level, 20) < _threshold:
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    parts = [stamp, f"level={level}", f"event={event}"]
    parts.extend(f"{k}={_fmt(v)}" for k, v in fields.items() if v is not None)
    line = " ".join(parts) + "\n"
    stream = _stream or sys.stdout
    with _lock:
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):  # closed stdout must not kill the agent
            pass


def debug(event: str, **fields: object) -> None:
    log("debug", event, **fields)


def info(event: str, **fields: object) -> None:
    log("info", event, **fields)


def warning(event: str, **fields: object) -> None:
    log("warning", event, **fields)


def error(event: str, **fields: object) -> None:
    log("error", event, **fields)


def safe_url(url: str) -> str:
    """The URL without any ``user:password@`` part, query or fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, "", ""))
