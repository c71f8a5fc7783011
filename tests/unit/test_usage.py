"""Usage read from LLM answers (controller.core.usage): JSON answers of both APIs, and
streams fed in chunks split at every possible place."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.core.usage import (
    JsonUsageCollector,
    NoUsage,
    SseUsageParser,
    Usage,
    asking_for_stream_usage,
    observer_for,
    usage_from_json,
)

ANTHROPIC_JSON = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
    "content": [{"type": "text", "text": "héllo ✓"}], "stop_reason": "end_turn",
    "usage": {"input_tokens": 12, "output_tokens": 34, "cache_creation_input_tokens": 5,
              "cache_read_input_tokens": 7},
}
OPENAI_JSON = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-x",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
              "prompt_tokens_details": {"cached_tokens": 64}},
}


def sse(*events: tuple[str | None, Any], eol: str = "\n") -> bytes:
    out = []
    for name, data in events:
        lines = [] if name is None else [f"event: {name}"]
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        lines += [f"data: {part}" for part in text.split("\n")]
        out.append(eol.join(lines) + eol + eol)
    return "".join(out).encode()


def anthropic_stream(eol: str = "\n") -> bytes:
    """A realistic stream; its message_start spreads its JSON over several data lines
    (a spurious blank line, e.g. from a \r\n split in two, would cut it short)."""
    return sse(
        ("message_start", json.dumps({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "usage": {"input_tokens": 25, "output_tokens": 1,
                      "cache_creation_input_tokens": 3, "cache_read_input_tokens": 9}}},
            indent=1)),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "naïve ✓ 日本"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 15}}),
        ("message_delta", {"type": "message_delta", "delta": {},
                           "usage": {"output_tokens": 42}}),
        ("message_stop", {"type": "message_stop"}),
        eol=eol)


ANTHROPIC_STREAM_USAGE = Usage(input=25, output=42, cache_creation=3, cache_read=9)


def openai_stream() -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "usage": None,
             "choices": [{"index": 0, "delta": {"content": "żółw"}}]}
    final = {"id": "c1", "object": "chat.completion.chunk", "choices": [],
             "usage": {"prompt_tokens": 50, "completion_tokens": 7,
                       "prompt_tokens_details": {"cached_tokens": 10}}}
    return sse((None, chunk), (None, chunk), (None, final), (None, "[DONE]"))


def test_anthropic_json() -> None:
    assert usage_from_json(json.dumps(ANTHROPIC_JSON)) == Usage(12, 34, 5, 7)


def test_openai_json_input_excludes_cached_tokens() -> None:
    found = usage_from_json(json.dumps(OPENAI_JSON))
    assert found == Usage(input=36, output=20, cache_read=64)
    assert found.total == 120


def test_openai_responses_json() -> None:
    body = {"object": "response", "usage": {"input_tokens": 30, "output_tokens": 4,
                                            "input_tokens_details": {"cached_tokens": 8}}}
    assert usage_from_json(json.dumps(body)) == Usage(input=22, output=4, cache_read=8)


@pytest.mark.parametrize("body", [b"", b"not json", b"[1,2]", b'{"usage": null}',
                                  b'{"usage": {"input_tokens": true}}',
                                  b'{"usage": {"input_tokens": -3}}'])
def test_no_usage(body: bytes) -> None:
    assert usage_from_json(body) is None


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_anthropic_stream_whole(eol: str) -> None:
    parser = SseUsageParser()
    parser.feed(anthropic_stream(eol))
    assert parser.usage == ANTHROPIC_STREAM_USAGE
    assert parser.events == 6


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_anthropic_stream_split_at_every_byte_boundary(eol: str) -> None:
    """Every split into two chunks (mid-line, mid-UTF-8, between \\r and \\n) and the
    stream fed byte by byte give the same usage."""
    raw = anthropic_stream(eol)
    assert any(b >= 0x80 for b in raw)  # multi-byte characters are in there
    for cut in range(len(raw) + 1):
        parser = SseUsageParser()
        parser.feed(raw[:cut])
        parser.feed(raw[cut:])
        assert parser.usage == ANTHROPIC_STREAM_USAGE, cut
        assert parser.events == 6, cut
    parser = SseUsageParser()
    for i in range(len(raw)):
        parser.feed(raw[i:i + 1])
    assert parser.usage == ANTHROPIC_STREAM_USAGE


def test_message_delta_with_every_field_replaces_them() -> None:
    parser = SseUsageParser()
    parser.feed(sse(
        ("message_start", {"type": "message_start", "message": {"usage": {
            "input_tokens": 5, "output_tokens": 1}}}),
        ("message_delta", {"type": "message_delta", "usage": {
            "input_tokens": 6, "output_tokens": 9, "cache_creation_input_tokens": None,
            "cache_read_input_tokens": 2}})))
    assert parser.usage == Usage(input=6, output=9, cache_read=2)


def test_openai_stream_split_everywhere() -> None:
    raw = openai_stream()
    for cut in range(len(raw) + 1):
        parser = SseUsageParser()
        parser.feed(raw[:cut])
        parser.feed(raw[cut:])
        assert parser.usage == Usage(input=40, output=7, cache_read=10), cut


def test_openai_responses_stream() -> None:
    parser = SseUsageParser()
    parser.feed(sse(("response.output_text.delta", {"type": "response.output_text.delta",
                                                    "delta": "x"}),
                    ("response.completed", {"type": "response.completed", "response": {
                        "usage": {"input_tokens": 11, "output_tokens": 3,
                                  "input_tokens_details": {"cached_tokens": 0}}}})))
    assert parser.usage == Usage(input=11, output=3)


def test_multi_line_data_and_comments() -> None:
    parser = SseUsageParser()
    parser.feed(b": keep-alive\n\nevent: message_start\ndata: {\"type\": \"message_start\",\n"
                b"data: \"message\": {\"usage\": {\"input_tokens\": 4, \"output_tokens\": 2}}}\n\n")
    assert parser.usage == Usage(input=4, output=2)


def test_an_oversize_event_is_dropped_and_memory_stays_bounded() -> None:
    """An event over the cap is skipped to its end, even when it arrives in small
    chunks; what is buffered never exceeds the cap; the next events still count."""
    parser = SseUsageParser(max_event_bytes=1000)
    big = {"type": "message_start", "message": {"usage": {"input_tokens": 999},
                                                "pad": "x" * 5000}}
    raw = sse(("message_start", big)) + anthropic_stream()
    for i in range(0, len(raw), 7):
        parser.feed(raw[i:i + 7])
        assert len(parser._line) + parser._size <= 1000
    assert parser.dropped == 1
    assert parser.usage == ANTHROPIC_STREAM_USAGE
    # One line without any end of line, larger than the cap: nothing piles up.
    endless = SseUsageParser(max_event_bytes=1000)
    for _ in range(100):
        endless.feed(b"data: " + b"y" * 500)
        assert len(endless._line) <= 1000


def test_json_collector_caps_its_copy() -> None:
    body = json.dumps(ANTHROPIC_JSON).encode()
    collector = JsonUsageCollector(max_bytes=len(body))
    for i in range(0, len(body), 3):
        collector.feed(body[i:i + 3])
    assert collector.usage == Usage(12, 34, 5, 7)
    small = JsonUsageCollector(max_bytes=len(body) - 1)
    small.feed(body)
    assert small.overflowed and small.usage == Usage()


def test_observer_for_content_types() -> None:
    assert isinstance(observer_for("text/event-stream; charset=utf-8"), SseUsageParser)
    assert isinstance(observer_for("application/json"), JsonUsageCollector)
    assert isinstance(observer_for("text/html"), NoUsage)
    assert isinstance(observer_for(None), NoUsage)
    assert isinstance(observer_for("application/json", "gzip"), NoUsage)


def test_usage_adds_up() -> None:
    assert Usage(1, 2, 3, 4) + Usage(10, 20, 30, 40) == Usage(11, 22, 33, 44)
    assert Usage(1, 2, 3, 4).total == 10


@pytest.mark.parametrize(("body", "asks"), [
    (b'{"stream": true, "messages": []}', True),
    (b'{"stream": true, "stream_options": {"include_usage": false}}', True),
    (b'{"stream": true, "stream_options": {"foo": 1}}', True),
    (b'{"stream": true, "stream_options": {"include_usage": true}}', None),
    (b'{"stream": false}', None),
    (b'{"messages": []}', None),
    (b'{"stream": true, "stream_options": "x"}', None),
    (b'[1, 2]', None),
    (b'not json', None),
])
def test_an_openai_stream_is_made_to_ask_for_usage(body: bytes, asks: bool | None) -> None:
    changed = asking_for_stream_usage(body)
    if asks is None:
        assert changed is None
    else:
        request = json.loads(changed or b"")
        assert request["stream_options"]["include_usage"] is True
        assert {k: v for k, v in request.items() if k != "stream_options"} == \
            {k: v for k, v in json.loads(body).items() if k != "stream_options"}
        assert request["stream_options"].get("foo") == json.loads(body).get(
            "stream_options", {}).get("foo")
