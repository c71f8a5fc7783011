"""A fake Anthropic-compatible Messages API for demos and tests.

It checks what the real API checks: the path is exactly /v1/messages (so a
doubled /v1/v1 fails with 404), the `anthropic-version` header is present,
and the key arrives as `x-api-key` or `Authorization: Bearer` and matches.
It answers a Messages-API-shaped reply and records every request (never the
key itself: only whether it matched).
"""

from __future__ import annotations

import hmac
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    path: str
    auth_scheme: str  # "x-api-key" | "bearer" | "none"
    key_ok: bool
    model: str | None
    text: str
    status: int
    earlier: tuple[str, ...] = ()
    """The contents of the messages before the last one (earlier turns)."""


@dataclass
class FakeLLM:
    api_key: str
    requests: list[Seen] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def _error(self, status: int, kind: str, message: str) -> web.Response:
        return web.json_response({"type": "error", "error": {"type": kind, "message": message}},
                                 status=status)

    async def handle(self, request: web.Request) -> web.Response:
        presented, scheme = request.headers.get("x-api-key"), "x-api-key"
        if presented is None:
            auth = request.headers.get("Authorization", "")
            scheme = "bearer" if auth.lower().startswith("bearer ") else "none"
            presented = auth[7:].strip() if scheme == "bearer" else None
        key_ok = presented is not None and hmac.compare_digest(presented.encode(),
                                                               self.api_key.encode())
        text, model, contents = "", None, []
        try:
            body: Any = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            model = body.get("model") if isinstance(body.get("model"), str) else None
            for message in body.get("messages") or []:
                content = message.get("content") if isinstance(message, dict) else None
                if isinstance(content, str):
                    text = content
                elif isinstance(content, list):
                    text = "".join(b.get("text", "") for b in content if isinstance(b, dict))
                contents.append(text)

        def seen(status: int) -> None:
            self.requests.append(Seen(request.path, scheme, key_ok, model, text, status,
                                      tuple(contents[:-1])))

        if request.method != "POST" or request.path != "/v1/messages":
            seen(404)
            return self._error(404, "not_found_error", f"no route {request.method} {request.path}")
        if not key_ok:
            seen(401)
            return self._error(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            seen(400)
            return self._error(400, "invalid_request_error", "anthropic-version header required")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) \
                or not isinstance(body.get("max_tokens"), int):
            seen(400)
            return self._error(400, "invalid_request_error", "messages and max_tokens required")
        seen(200)
        reply = f"fake-llm heard: {text}"
        return web.json_response({
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": model or "fake", "stop_reason": "end_turn", "stop_sequence": None,
            "content": [{"type": "text", "text": reply}],
            "usage": {"input_tokens": len(text.split()), "output_tokens": len(reply.split())},
        })

    def summary(self) -> str:
        return json.dumps([s.__dict__ for s in self.requests])
