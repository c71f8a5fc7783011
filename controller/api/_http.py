"""What both HTTP APIs (admin and registry) do alike: read a bounded JSON body, and
answer 503 store_unavailable while the database cannot be reached. Each API keeps
its own error shape; this module only decides."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

STORE_RETRY_AFTER_SECONDS = 5
"""Retry-After of a 503 store_unavailable: about the time a PostgreSQL restart takes."""
STORE_UNAVAILABLE = "the database is unavailable; retry later"


class BodyError(Exception):
    """The body is over the limit (`status` 413) or not JSON (400); `str()` says which."""

    def __init__(self, status: int, message: str, size: int | None = None) -> None:
        self.status = status
        self.size = size
        super().__init__(message)


async def read_json(request: web.Request, limit: int) -> Any:
    """The request's JSON body, never reading more than `limit` + 1 bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyError(413, f"body over {limit} bytes", request.content_length)
    raw = b""  # read() returns what has arrived so far: loop to the end
    while len(raw) <= limit and (chunk := await request.content.read(limit + 1 - len(raw))):
        raw += chunk
    if len(raw) > limit:
        raise BodyError(413, f"body over {limit} bytes", len(raw))
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise BodyError(400, "body is not JSON") from None


def store_unavailable(request: web.Request, exc: Exception, log: logging.Logger,
                      ) -> dict[str, str]:
    """Log a 503 store_unavailable answer on the API's `log`; the headers it carries."""
    log.warning("%s %s: answered 503 store_unavailable: %s", request.method, request.path, exc)
    return {"Retry-After": str(STORE_RETRY_AFTER_SECONDS)}
