"""A fake Anthropic-compatible Messages API for demos and tests.

It checks what the real API checks: the path is exactly `<prefix>/v1/messages`
(so a doubled /v1/v1 fails with 404; MiniMax's prefix is `/anthropic`), the
`anthropic-version` header is present, and the key arrives as `x-api-key` or
`Authorization: Bearer` and matches. It answers a Messages-API-shaped reply, or
with `"stream": true` the Messages API's event stream, with `usage` as the real
API reports it, and records every request (never the key itself: only whether it
matched) and the usage it reported.
"""

from __future__ import annotations

import asyncio
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
    usage: tuple[int, int] = (0, 0)
    """(input, output) tokens this answer reported."""
    streamed: bool = False


@dataclass
class FakeLLM:
    api_key: str
    """The one key accepted (a test may change it: a rotated provider key)."""
    prefix: str = ""
    requests: list[Seen] = field(default_factory=list)
    stream_pause: float = 0.0
    """Seconds between the events of a stream."""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def _error(self, status: int, kind: str, message: str) -> web.Response:
        return web.json_response({"type": "error", "error": {"type": kind, "message": message}},
                                 status=status)

    async def handle(self, request: web.Request) -> web.StreamResponse:
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

        stream = isinstance(body, dict) and body.get("stream") is True

        def seen(status: int, usage: tuple[int, int] = (0, 0)) -> None:
            self.requests.append(Seen(request.path, scheme, key_ok, model, text, status,
                                      tuple(contents[:-1]), usage, stream))

        if request.method != "POST" or request.path != f"{self.prefix}/v1/messages":
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
        reply = f"fake-llm heard: {text}"
        usage = (len(text.split()), len(reply.split()))
        seen(200, usage)
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": model or "fake", "stop_reason": "end_turn", "stop_sequence": None,
            "content": [{"type": "text", "text": reply}],
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
        }
        if stream:
            return await self._stream(request, message, reply, usage)
        return web.json_response(message)

    async def _stream(self, request: web.Request, message: dict[str, Any], reply: str,
                      usage: tuple[int, int]) -> web.StreamResponse:
        """The Messages API's server-sent events: input usage in message_start, output
        usage in message_delta, the reply word by word."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        start = {**message, "content": [], "stop_reason": None,
                 "usage": {"input_tokens": usage[0], "output_tokens": 1}}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            *[("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": piece}})
              for piece in reply.split(" ")[:1] + [" " + w for w in reply.split(" ")[1:]]],
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": usage[1]}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        for name, data in events:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            if self.stream_pause:
                await asyncio.sleep(self.stream_pause)
        await response.write_eof()
        return response

    def summary(self) -> str:
        return json.dumps([s.__dict__ for s in self.requests])
