"""What both HTTP APIs (admin and registry) do alike: read a bounded JSON body, and
turn an expected failure into an answer.

`answer_for` is the one mapping from errors to HTTP answers: an `HttpError` a
handler raised is its own answer; a store that cannot be reached is 503
store_unavailable, an engine that cannot be reached 503 engine_unavailable, both
with Retry-After; a workspace being deleted is 409. Each API
keeps its own JSON error shape (the registry's is part of the agent protocol);
this module only decides status, class, message and headers."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import StreamReader, web

from controller.core.errors import (
    EngineUnavailableError,
    StoreUnavailableError,
    WorkspaceTerminatingError,
    WsctlError,
)

STORE_RETRY_AFTER_SECONDS = 5
"""Retry-After of a 503 store_unavailable: about the time a PostgreSQL restart takes."""
STORE_UNAVAILABLE = "the database is unavailable; retry later"
ENGINE_RETRY_AFTER_SECONDS = 5
"""Retry-After of a 503 engine_unavailable: about the time dockerd takes to come back."""


async def read_capped(content: StreamReader, limit: int, declared: int | None = None) -> bytes:
    """A body (a request's, or a response's the controller reads), never reading more
    than `limit` + 1 bytes; BodyError 413 when it is over `limit`."""
    if declared is not None and declared > limit:
        raise BodyError(413, f"body over {limit} bytes", declared)
    raw = b""  # read() returns what has arrived so far: loop to the end
    while len(raw) <= limit and (chunk := await content.read(limit + 1 - len(raw))):
        raw += chunk
    if len(raw) > limit:
        raise BodyError(413, f"body over {limit} bytes", len(raw))
    return raw


async def read_json(request: web.Request, limit: int) -> Any:
    """The request's JSON body, never reading more than `limit` + 1 bytes."""
    raw = await read_capped(request.content, limit, request.content_length)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise BodyError(400, "body is not JSON") from None


def store_unavailable(request: web.Request, exc: Exception, log: logging.Logger) -> None:
    """Log a 503 store_unavailable answer on the API's `log`."""
    log.warning("%s %s: answered 503 store_unavailable: %s", request.method, request.path, exc)


class HttpError(WsctlError):
    """An expected failure that is an HTTP answer: status, a class naming the failure
    (`store_unavailable`, `agent_unavailable`, ...), a message and, when retrying
    makes sense, Retry-After seconds."""

    def __init__(self, status: int, cls: str, message: str, *,
                 retry_after: int | None = None) -> None:
        self.status = status
        self.cls = cls
        self.message = message
        self.retry_after = retry_after
        super().__init__(message)

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class BodyError(HttpError):
    """The body is over the limit (413 body_too_large) or not JSON (400 invalid_body)."""

    def __init__(self, status: int, message: str, size: int | None = None) -> None:
        super().__init__(status, "body_too_large" if status == 413 else "invalid_body", message)
        self.size = size


def answer_for(exc: WsctlError, request: web.Request, log: logging.Logger) -> HttpError | None:
    """The HTTP answer to an expected failure, or None when it has none (a bug: let it
    be a 500 with its traceback in the log). 503s are logged on the API's `log`."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, StoreUnavailableError):
        store_unavailable(request, exc, log)
        return HttpError(503, "store_unavailable", STORE_UNAVAILABLE,
                         retry_after=STORE_RETRY_AFTER_SECONDS)
    if isinstance(exc, EngineUnavailableError):
        log.warning("%s %s: answered 503 engine_unavailable: %s", request.method,
                    request.path, exc)
        return HttpError(503, "engine_unavailable",
                         "the Docker engine is unavailable (restarting?); retry later",
                         retry_after=ENGINE_RETRY_AFTER_SECONDS)
    if isinstance(exc, WorkspaceTerminatingError):
        return HttpError(409, "terminating", str(exc))
    return None
