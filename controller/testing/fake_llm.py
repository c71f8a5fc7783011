"""A fake Anthropic-compatible Messages API for demos and tests.

It checks what the real API checks: the path is exactly `<prefix>/v1/messages`
(so a doubled /v1/v1 fails with 404; MiniMax's prefix is `/anthropic`), the
`anthropic-version` header is present, and the key arrives as `x-api-key` or
`Authorization: Bearer` and matches. It answers a Messages-API-shaped reply, or
with `"stream": true` the Messages API's event stream, with `usage` as the real
API reports it, and records every request (never the key itself: only whether it
matched) and the usage it reported; the newest `max_records` are kept.

It serves what the real Claude Code CLI (2.1.112) calls, so `claude -p` runs
against it with no network (docs/llm-gateway.md, "The fake provider"):

* `POST <prefix>/v1/messages?beta=true`: the query string is accepted (and
  recorded) on every API path, as the real API does.
* `POST <prefix>/v1/messages/count_tokens`: `{"input_tokens": N}`, the same N a
  message with that body reports.
* `HEAD <prefix>` (or `<prefix>/`): Claude Code's connection warm-up, answered
  200 without a body or a key check.

The reply is `fake-llm heard: <the last message's text>`; text blocks that start
with `<system-reminder>` (Claude Code's context) are not part of that text.

One directive drives a tool-use turn: a last user message that holds
`[[write path=PATH]]CONTENT[[/write]]`, in a request that offers a tool named
`Write` (Claude Code's: `file_path`, `content`), is answered with a text block and
a `tool_use` block calling `Write` with `{"file_path": PATH, "content": CONTENT}`
(stop reason `tool_use`). A relative PATH is joined to the "Primary working
directory" Claude Code's system prompt names, when it names one (its `Write` wants
absolute paths). The next request, whose last message carries the `tool_result`,
is answered `wrote PATH` (the `file_path` called), or `write failed: <result>` if
the result is an error. Without a `Write` tool the directive is answered as text.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import posixpath
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

WRITE_TOOL = "Write"
WRITE_DIRECTIVE = re.compile(r"\[\[write path=(?P<path>[^\]\s]+)\]\](?P<content>.*?)\[\[/write\]\]",
                             re.DOTALL)
REMINDER = "<system-reminder>"
WORKING_DIRECTORY = re.compile(r"Primary working directory: (?P<cwd>/\S*)")
MAX_RECORDS = 1000
"""Requests a FakeLLM keeps by default (`make run --demo` serves it for days)."""


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
    method: str = "POST"
    query: str = ""
    """The raw query string (`beta=true` from Claude Code and the SDKs' beta client)."""
    kind: str = "messages"
    """`messages`, `count_tokens`, `probe` (HEAD/GET of the base URL) or `unknown`."""
    tool_use: dict[str, Any] | None = None
    """The input of the `Write` call this answer made, if it made one."""
    tool_result: str | None = None
    """The text of the tool result the last message carried, if it carried one."""


def write_directive(path: str, content: str) -> str:
    """The prompt that makes the fake call `Write` (for tests: `claude -p` with it)."""
    if not path or any(c.isspace() or c == "]" for c in path) or "[[/write]]" in content:
        raise ValueError("the path may hold no space or ']', the content no '[[/write]]'")
    return f"[[write path={path}]]{content}[[/write]]"


def _text_of(content: Any) -> str:
    """A message's words: a string, or its text blocks except Claude Code's reminders."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(b.get("text", "") for b in content
                   if isinstance(b, dict) and b.get("type", "text") == "text"
                   and isinstance(b.get("text", ""), str)
                   and not b.get("text", "").startswith(REMINDER))


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict)
                       and isinstance(b.get("text"), str))
    return content if isinstance(content, str) else ""


def _offers_write(body: dict[str, Any]) -> bool:
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("name") == WRITE_TOOL:
            properties = (tool.get("input_schema") or {}).get("properties") or {}
            return "file_path" in properties and "content" in properties
    return False


def _working_directory(body: dict[str, Any]) -> str | None:
    system = body.get("system")
    text = system if isinstance(system, str) else _result_text({"content": system})
    found = WORKING_DIRECTORY.search(text)
    return found.group("cwd") if found else None


def _tool_answer(messages: list[Any]) -> tuple[str, str] | None:
    """(reply, result text) when the last message answers a `Write` call of ours."""
    last = messages[-1] if messages else None
    content = last.get("content") if isinstance(last, dict) else None
    results = [b for b in content or [] if isinstance(b, dict) and b.get("type") == "tool_result"] \
        if isinstance(content, list) else []
    if not results:
        return None
    calls: dict[str, dict[str, Any]] = {}
    before = messages[-2] if len(messages) > 1 else None
    for block in (before.get("content") if isinstance(before, dict) else None) or []:
        if isinstance(block, dict) and block.get("type") == "tool_use" \
                and block.get("name") == WRITE_TOOL and isinstance(block.get("input"), dict):
            calls[str(block.get("id"))] = block["input"]
    replies, texts = [], []
    for result in results:
        text = _result_text(result)
        texts.append(text)
        call = calls.get(str(result.get("tool_use_id")))
        if call is None:
            replies.append(f"fake-llm heard a tool result: {text}")
        elif result.get("is_error"):
            replies.append(f"write failed: {text}")
        else:
            replies.append(f"wrote {call.get('file_path')}")
    return "\n".join(replies), "\n".join(texts)


def _words(text: str) -> int:
    return len(text.split())


@dataclass
class FakeLLM:
    api_key: str
    """The one key accepted (a test may change it: a rotated provider key)."""
    prefix: str = ""
    requests: list[Seen] = field(default_factory=list)
    """The newest `max_records` requests, oldest first."""
    stream_pause: float = 0.0
    """Seconds between the events of a stream."""
    max_records: int = MAX_RECORDS
    dropped: int = 0
    """Records let go to keep `requests` at `max_records`."""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)  # Claude Code sends ~100 KiB
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def _record(self, seen: Seen) -> None:
        self.requests.append(seen)
        excess = len(self.requests) - self.max_records
        if excess > 0:
            del self.requests[:excess]
            self.dropped += excess

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
        messages: list[Any] = []
        if isinstance(body, dict):
            model = body.get("model") if isinstance(body.get("model"), str) else None
            listed = body.get("messages")
            messages = listed if isinstance(listed, list) else []
            for message in messages:
                text = _text_of(message.get("content") if isinstance(message, dict) else None)
                contents.append(text)

        stream = isinstance(body, dict) and body.get("stream") is True
        path = request.path
        kind = {f"{self.prefix}/v1/messages": "messages",
                f"{self.prefix}/v1/messages/count_tokens": "count_tokens"}.get(path, "unknown")
        if request.method in ("HEAD", "GET") and path in (self.prefix or "/", f"{self.prefix}/"):
            kind = "probe"

        def seen(status: int, usage: tuple[int, int] = (0, 0), **more: Any) -> None:
            self._record(Seen(path, scheme, key_ok, model, text, status, tuple(contents[:-1]),
                              usage, stream, method=request.method,
                              query=request.rel_url.raw_query_string, kind=kind, **more))

        if kind == "probe":  # Claude Code's warm-up of the base URL; it ignores the answer
            seen(200)
            return web.Response(status=200)
        if request.method != "POST" or kind == "unknown":
            seen(404)
            return self._error(404, "not_found_error", f"no route {request.method} {path}")
        if not key_ok:
            seen(401)
            return self._error(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            seen(400)
            return self._error(400, "invalid_request_error", "anthropic-version header required")
        needs = ("messages",) if kind == "count_tokens" else ("messages", "max_tokens")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) \
                or ("max_tokens" in needs and not isinstance(body.get("max_tokens"), int)):
            seen(400)
            return self._error(400, "invalid_request_error", " and ".join(needs) + " required")

        input_tokens = _words(text)
        if kind == "count_tokens":
            seen(200, (input_tokens, 0))
            return web.json_response({"input_tokens": input_tokens})

        blocks: list[dict[str, Any]]
        stop_reason, call, result = "end_turn", None, None
        answered = _tool_answer(messages)
        directive = WRITE_DIRECTIVE.search(text)
        if answered is not None:
            reply, result = answered
            blocks = [{"type": "text", "text": reply}]
        elif directive is not None and _offers_write(body):
            file_path = directive.group("path")
            cwd = _working_directory(body)
            if cwd is not None and not file_path.startswith("/"):
                file_path = posixpath.join(cwd, file_path)
            call = {"file_path": file_path, "content": directive.group("content")}
            reply = f"writing {file_path}"
            blocks = [{"type": "text", "text": reply},
                      {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}",
                       "name": WRITE_TOOL, "input": call}]
            stop_reason = "tool_use"
        else:
            reply = f"fake-llm heard: {text}"
            blocks = [{"type": "text", "text": reply}]
        usage = (input_tokens, _words(reply) + (_words(json.dumps(call)) if call else 0))
        seen(200, usage, tool_use=call, tool_result=result)
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": model or "fake", "content": blocks,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": usage[1]},
        }
        if stream:
            return await self._stream(request, message)
        return web.json_response(message)

    @staticmethod
    def _deltas(block: dict[str, Any]) -> list[dict[str, Any]]:
        """A block's deltas: text word by word, a tool's input as JSON in three pieces."""
        if block["type"] == "tool_use":
            whole = json.dumps(block["input"])
            cut = [0, len(whole) // 3, 2 * len(whole) // 3, len(whole)]
            return [{"type": "input_json_delta", "partial_json": whole[a:b]}
                    for a, b in itertools.pairwise(cut) if a < b]
        words = block["text"].split(" ")
        return [{"type": "text_delta", "text": piece}
                for piece in words[:1] + [" " + w for w in words[1:]]]

    async def _stream(self, request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
        """The Messages API's server-sent events, in the real API's order: message_start
        (input usage), per block content_block_start, deltas, content_block_stop (a
        ping after the first start), message_delta (stop reason, output usage),
        message_stop."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None,
                 "usage": {**usage, "output_tokens": 1}}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start})]
        for index, block in enumerate(message["content"]):
            empty = {**block, "input": {}} if block["type"] == "tool_use" else {**block, "text": ""}
            events.append(("content_block_start", {"type": "content_block_start",
                                                   "index": index, "content_block": empty}))
            if index == 0:
                events.append(("ping", {"type": "ping"}))
            events.extend(("content_block_delta", {"type": "content_block_delta",
                                                   "index": index, "delta": delta})
                          for delta in self._deltas(block))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        events += [
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": message["stop_reason"],
                                         "stop_sequence": None},
                               "usage": {"output_tokens": usage["output_tokens"]}}),
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
