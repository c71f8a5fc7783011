"""Token usage read from LLM answers as they pass through the gateway. Pure: bytes in,
`Usage` out, no I/O.

The gateway streams every answer to the container chunk by chunk; it hands a
copy of each chunk to an observer from `observer_for` and asks it for the usage
when the answer has ended. Observers never hold bytes back (they only look) and
are bounded in memory: a server-sent event over `MAX_EVENT_BYTES` is dropped
(usage events are a few hundred bytes; text deltas are small), and a JSON answer
over `MAX_JSON_BYTES` is not parsed (its usage is then unknown: zero).

What is read:
- Anthropic Messages (JSON): `usage.input_tokens`, `output_tokens`,
  `cache_creation_input_tokens`, `cache_read_input_tokens`.
- Anthropic streams: `message_start` (`message.usage`, every field), then
  `message_delta` (`usage`: cumulative counts; a field it carries replaces the
  earlier value, so the final `output_tokens` wins).
- OpenAI chat completions (JSON, and stream chunks carrying `usage`, sent when
  the client asked `stream_options.include_usage`): `prompt_tokens`,
  `completion_tokens`, cached in `prompt_tokens_details.cached_tokens`.
- OpenAI responses (JSON, and the `response.completed` event):
  `input_tokens`, `output_tokens`, cached in `input_tokens_details.cached_tokens`.

`Usage.input` counts input tokens *not* read from the cache, as Anthropic reports
them; OpenAI's prompt count includes the cached ones, so for OpenAI `input` is
prompt minus cached, and `total` is what the provider billed in both cases.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

MAX_EVENT_BYTES = 1024 * 1024
MAX_JSON_BYTES = 4 * 1024 * 1024

_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class Usage:
    """Tokens of one LLM call (or a sum of calls)."""

    input: int = 0
    output: int = 0
    cache_creation: int = 0
    cache_read: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_creation + self.cache_read

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input + other.input, self.output + other.output,
                     self.cache_creation + other.cache_creation,
                     self.cache_read + other.cache_read)


ZERO = Usage()


def _count(value: Any) -> int | None:
    """A token count, or None for anything else (a bool, a negative, a float)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _get(mapping: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def usage_from_mapping(usage: Any, previous: Usage = ZERO) -> Usage | None:
    """A `usage` object in any of the shapes above, or None when it is not one.
    Fields it lacks keep their value from `previous` (Anthropic's `message_delta`
    carries only what changed)."""
    if not isinstance(usage, Mapping):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    if prompt is not None:  # OpenAI chat completions
        cached = _count(_get(usage, "prompt_tokens_details", "cached_tokens")) or 0
        return Usage(input=max(0, prompt - cached),
                     output=_count(usage.get("completion_tokens")) or 0,
                     cache_read=min(cached, prompt))
    inp = _count(usage.get("input_tokens"))
    details = usage.get("input_tokens_details")
    if inp is not None and isinstance(details, Mapping):  # OpenAI responses
        cached = _count(details.get("cached_tokens")) or 0
        return Usage(input=max(0, inp - cached), output=_count(usage.get("output_tokens")) or 0,
                     cache_read=min(cached, inp))
    fields = {"input": inp, "output": _count(usage.get("output_tokens")),
              "cache_creation": _count(usage.get("cache_creation_input_tokens")),
              "cache_read": _count(usage.get("cache_read_input_tokens"))}
    if all(v is None for v in fields.values()):
        return None
    return Usage(**{k: getattr(previous, k) if v is None else v for k, v in fields.items()})


def usage_from_json(body: bytes | str) -> Usage | None:
    """The usage of a whole JSON answer, or None when it has none (or is not JSON)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return usage_from_mapping(_get(data, "usage"))


class UsageObserver(Protocol):
    """Sees a copy of every chunk of one answer; `usage` when it has ended."""

    def feed(self, chunk: bytes) -> None: ...

    @property
    def usage(self) -> Usage: ...


class SseUsageParser:
    """An incremental server-sent-events reader that keeps the usage it sees.

    Chunks may split anywhere (mid-line, mid-UTF-8 character, between `\\r` and
    `\\n`): lines are cut on bytes and an event's data is decoded only once the
    event is complete. At most `max_event_bytes` of one event are kept; a larger
    event is skipped up to its end (`dropped` counts them).
    """

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self.usage = ZERO
        self.dropped = 0
        self.events = 0
        self._line = bytearray()
        self._data: list[bytes] = []
        self._size = 0
        self._event = b""
        self._dropping = False
        self._after_cr = False

    def feed(self, chunk: bytes) -> None:
        pos = 0
        if self._after_cr and chunk[:1] == b"\n":  # the \n of a \r\n split across chunks
            pos = 1
        self._after_cr = False
        for match in _EOL.finditer(chunk, pos):
            self._take(chunk[pos:match.start()])
            self._end_line()
            pos = match.end()
        self._take(chunk[pos:])
        self._after_cr = chunk.endswith(b"\r")

    def _take(self, part: bytes) -> None:
        if self._dropping or not part:
            return
        self._line += part
        if self._size + len(self._line) > self.max_event_bytes:
            self._drop()

    def _drop(self) -> None:
        self._dropping = True
        self.dropped += 1
        self._line.clear()
        self._data.clear()
        self._size = 0

    def _end_line(self) -> None:
        line = bytes(self._line)
        self._line.clear()
        if not line:
            if not self._dropping and self._data:
                self._dispatch(self._event, b"\n".join(self._data))
            self._data.clear()
            self._size = 0
            self._event = b""
            self._dropping = False
            return
        if self._dropping or line.startswith(b":"):
            return
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._size += len(value) + 1
        elif name == b"event":
            self._event = value

    def _dispatch(self, event: bytes, data: bytes) -> None:
        self.events += 1
        if data == b"[DONE]":
            return
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(payload, Mapping):
            return
        kind = payload.get("type")
        if not isinstance(kind, str):
            kind = event.decode("utf-8", "replace")
        found: Usage | None = None
        if kind == "message_start":
            found = usage_from_mapping(_get(payload, "message", "usage"))
        elif kind == "message_delta":
            found = usage_from_mapping(payload.get("usage"), self.usage)
        elif kind == "response.completed":
            found = usage_from_mapping(_get(payload, "response", "usage"))
        elif "usage" in payload:  # an OpenAI chat chunk; `usage: null` until the last
            found = usage_from_mapping(payload.get("usage"))
        if found is not None:
            self.usage = found


class JsonUsageCollector:
    """Keeps a copy of a JSON answer, up to `max_bytes`, to read its usage at the end."""

    def __init__(self, max_bytes: int = MAX_JSON_BYTES) -> None:
        self.max_bytes = max_bytes
        self.overflowed = False
        self._body = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self.overflowed:
            return
        if len(self._body) + len(chunk) > self.max_bytes:
            self.overflowed = True
            self._body = bytearray()
            return
        self._body += chunk

    @property
    def usage(self) -> Usage:
        if self.overflowed or not self._body:
            return ZERO
        return usage_from_json(bytes(self._body)) or ZERO


class NoUsage:
    """For answers that carry no usage (errors, other content types)."""

    usage = ZERO

    def feed(self, chunk: bytes) -> None:
        return None


def observer_for(content_type: str | None, content_encoding: str | None = None
                 ) -> UsageObserver:
    """The observer for an answer of this type: events, JSON, or nothing. A
    compressed answer is passed through as it is and not read."""
    if content_encoding and content_encoding.strip().lower() not in ("", "identity"):
        return NoUsage()
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "text/event-stream":
        return SseUsageParser()
    if kind == "application/json" or kind.endswith("+json"):
        return JsonUsageCollector()
    return NoUsage()


STREAM_USAGE_PATHS = ("/chat/completions", "/completions")
"""OpenAI endpoints whose streams report usage only when asked
(`stream_options.include_usage`); the Responses API always does."""


def asking_for_stream_usage(body: bytes) -> bytes | None:
    """An OpenAI streaming request body that does not ask for usage, made to ask (the
    final chunk then carries it, so a budget cannot be dodged by streaming); None
    when there is nothing to change (not JSON, not an object, not streaming, or
    already asking)."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(request, dict) or request.get("stream") is not True:
        return None
    options = request.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return None  # the provider will say what is wrong with it
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    request["stream_options"] = {**(options or {}), "include_usage": True}
    return json.dumps(request, separators=(",", ":")).encode()
