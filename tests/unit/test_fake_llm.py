"""The fake Anthropic-compatible API (controller/testing/fake_llm.py) with the official
`anthropic` SDK as its client, and with the requests the real Claude Code CLI
(2.1.112) sends, as recorded against it (docs/llm-gateway.md, "The fake provider").

The fake runs on 127.0.0.1 in a thread (the harness's FakeLLMThread), with MiniMax's
`/anthropic` prefix as the gateway tests use it. No Docker, no node: the real
Claude Code run is an e2e test inside a container image.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from controller.testing.fake_llm import MAX_RECORDS, FakeLLM, write_directive
from controller.testing.harness import FakeLLMThread

KEY = "sk-fake-test-0123456789"
PREFIX = "/anthropic"
MODEL = "fake-model"

WRITE_TOOL: Any = {  # Any: the SDK's ToolParam has no "$schema"
    # Claude Code 2.1.112's Write tool as it sends it (description shortened).
    "name": "Write",
    "description": "Writes a file to the local filesystem.",
    "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "file_path": {"description": "The absolute path to the file to write "
                                         "(must be absolute, not relative)", "type": "string"},
            "content": {"description": "The content to write to the file", "type": "string"},
        },
        "required": ["file_path", "content"],
        "additionalProperties": False,
    },
}
BETA_QUERY = {"beta": "true"}
"""Claude Code's SDK (JS 0.81) adds `?beta=true` to every beta call; the Python SDK
in the dev extra does not, so the tests ask for it."""
READ_TOOL: Any = {"name": "Read", "description": "Reads a file.",
                             "input_schema": {"type": "object",
                                              "properties": {"file_path": {"type": "string"}}}}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMThread]:
    thread = FakeLLMThread("127.0.0.1", KEY, prefix=PREFIX).start()
    yield thread
    thread.stop()


@pytest.fixture
def llm(server: FakeLLMThread) -> FakeLLM:
    server.llm.requests.clear()
    server.llm.api_key = KEY
    return server.llm


@pytest.fixture
def base(server: FakeLLMThread) -> str:
    return f"http://127.0.0.1:{server.port}{PREFIX}"


@pytest.fixture
def client(base: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=base, auth_token=KEY, max_retries=0,
                             timeout=10.0) as sdk:
        yield sdk


def raw(url: str, body: dict[str, Any] | None = None, method: str = "POST",
        headers: dict[str, str | None] | None = None) -> tuple[int, bytes]:
    """One request; a header given as None is not sent."""
    given = {"anthropic-version": "2023-06-01", "x-api-key": KEY,
             "content-type": "application/json", **(headers or {})}
    sent = {name: value for name, value in given.items() if value is not None}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def events(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a server-sent event stream."""
    found = []
    for chunk in stream.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines() if ": " in line)
        if lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


def test_stream_gives_the_text_and_the_final_usage(client: anthropic.Anthropic,
                                                   llm: FakeLLM) -> None:
    with client.messages.stream(model=MODEL, max_tokens=64, messages=[
            {"role": "user", "content": "hello there"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "fake-llm heard: hello there" and len(pieces) == 4
    assert final.stop_reason == "end_turn"
    (seen,) = llm.requests
    assert seen.streamed and seen.usage == (2, 4)
    assert (final.usage.input_tokens, final.usage.output_tokens) == seen.usage
    assert final.usage.cache_creation_input_tokens == 0
    assert final.usage.cache_read_input_tokens == 0


def test_create_stream_true_events_in_the_real_apis_order(base: str, llm: FakeLLM) -> None:
    status, body = raw(f"{base}/v1/messages", {
        "model": MODEL, "max_tokens": 64, "stream": True,
        "messages": [{"role": "user", "content": "two words"}]})
    assert status == 200
    got = events(body)
    assert [name for name, _ in got] == [
        "message_start", "content_block_start", "ping", "content_block_delta",
        "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in got)
    start, delta = got[0][1]["message"], got[-2][1]
    assert start["usage"]["input_tokens"] == 2 and start["stop_reason"] is None
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 4


def test_create_stream_true_with_the_sdk(client: anthropic.Anthropic, llm: FakeLLM) -> None:
    stream = client.messages.create(model=MODEL, max_tokens=64, stream=True, messages=[
        {"role": "user", "content": "raw events"}])
    kinds, text, usage = [], "", None
    for event in stream:
        kinds.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            text += event.delta.text
        if event.type == "message_delta":
            usage = event.usage.output_tokens
    assert text == "fake-llm heard: raw events"
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert usage == llm.requests[-1].usage[1] == 4


def write_turn(directive: str) -> list[Any]:
    return [{"role": "user", "content": directive}]


def test_tool_use_round_trip(client: anthropic.Anthropic, llm: FakeLLM) -> None:
    messages: list[Any] = write_turn("please " + write_directive("/workspace/hello.txt",
                                                                 "hi\nthere"))
    first = client.messages.create(model=MODEL, max_tokens=256, tools=[READ_TOOL, WRITE_TOOL],
                                   messages=messages)
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "Write"
    assert call.input == {"file_path": "/workspace/hello.txt", "content": "hi\nthere"}
    assert llm.requests[-1].tool_use == call.input

    messages += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{
                     "type": "tool_result", "tool_use_id": call.id,
                     "content": "File created successfully at: /workspace/hello.txt"}]}]
    final = client.messages.create(model=MODEL, max_tokens=256, tools=[READ_TOOL, WRITE_TOOL],
                                   messages=messages)
    assert final.stop_reason == "end_turn"
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == "wrote /workspace/hello.txt"  # type: ignore[union-attr]
    assert llm.requests[-1].tool_result == "File created successfully at: /workspace/hello.txt"


def test_tool_use_streamed_input_arrives_whole(client: anthropic.Anthropic,
                                               llm: FakeLLM) -> None:
    """The tool's input comes as input_json_delta pieces; the SDK joins them."""
    with client.messages.stream(model=MODEL, max_tokens=256, tools=[WRITE_TOOL],
                                messages=write_turn('[[write path=/w/a.json]]{"k": "v"}'
                                                    "[[/write]]")) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    call = final.content[1]
    assert call.type == "tool_use"
    assert call.input == {"file_path": "/w/a.json", "content": '{"k": "v"}'}


def test_tool_use_relative_path_and_a_refused_write(client: anthropic.Anthropic,
                                                    llm: FakeLLM) -> None:
    """A relative path is joined to the working directory Claude Code's system prompt
    names; an error result is answered as a failed write."""
    system = ("# Environment\n - Primary working directory: /workspace\n"
              "  - Is a git repository: false")
    messages: list[Any] = write_turn("[[write path=notes/x.txt]]x[[/write]]")
    first = client.messages.create(model=MODEL, max_tokens=256, system=system,
                                   tools=[WRITE_TOOL], messages=messages)
    call = first.content[-1]
    assert call.type == "tool_use" and call.input == {"file_path": "/workspace/notes/x.txt",
                                                      "content": "x"}
    messages += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "is_error": True, "content": "not granted"}]}]
    final = client.messages.create(model=MODEL, max_tokens=256, system=system,
                                   tools=[WRITE_TOOL], messages=messages)
    assert final.content[0].text == "write failed: not granted"  # type: ignore[union-attr]


def test_write_directive_refuses_what_it_cannot_say() -> None:
    assert write_directive("a/b.txt", "x]]y") == "[[write path=a/b.txt]]x]]y[[/write]]"
    for path, content in (("a b", "x"), ("a]", "x"), ("", "x"), ("a", "[[/write]]")):
        with pytest.raises(ValueError):
            write_directive(path, content)


def test_directive_without_a_write_tool_is_text(client: anthropic.Anthropic,
                                                llm: FakeLLM) -> None:
    message = client.messages.create(model=MODEL, max_tokens=64, tools=[READ_TOOL],
                                     messages=write_turn("[[write path=/a]]b[[/write]]"))
    assert message.stop_reason == "end_turn"
    assert [b.type for b in message.content] == ["text"]


def test_count_tokens(client: anthropic.Anthropic, llm: FakeLLM) -> None:
    messages: list[Any] = [{"role": "user", "content": "count these four words"}]
    counted = client.messages.count_tokens(model=MODEL, messages=messages, tools=[WRITE_TOOL])
    beta = client.beta.messages.count_tokens(model=MODEL, messages=messages,
                                             extra_query=BETA_QUERY)
    sent = client.messages.create(model=MODEL, max_tokens=64, messages=messages)
    assert counted.input_tokens == beta.input_tokens == sent.usage.input_tokens == 4
    paths = [(s.path, s.query, s.kind, s.status) for s in llm.requests]
    assert paths == [(f"{PREFIX}/v1/messages/count_tokens", "", "count_tokens", 200),
                     (f"{PREFIX}/v1/messages/count_tokens", "beta=true", "count_tokens", 200),
                     (f"{PREFIX}/v1/messages", "", "messages", 200)]


def test_beta_query_is_accepted(client: anthropic.Anthropic, llm: FakeLLM) -> None:
    message = client.beta.messages.create(model=MODEL, max_tokens=64, betas=[
        "claude-code-20250219"], messages=[{"role": "user", "content": "beta"}],
        extra_query=BETA_QUERY)
    assert message.content[0].text == "fake-llm heard: beta"  # type: ignore[union-attr]
    seen = llm.requests[-1]
    assert (seen.path, seen.query, seen.status) == (f"{PREFIX}/v1/messages", "beta=true", 200)


def test_doubled_v1_is_not_found(base: str, llm: FakeLLM) -> None:
    with anthropic.Anthropic(base_url=f"{base}/v1", api_key=KEY, max_retries=0,
                             timeout=10.0) as doubled, pytest.raises(anthropic.NotFoundError):
        doubled.messages.create(model=MODEL, max_tokens=64,
                                messages=[{"role": "user", "content": "x"}])
    seen = llm.requests[-1]
    assert (seen.path, seen.status, seen.kind) == (f"{PREFIX}/v1/v1/messages", 404, "unknown")


def test_key_and_version_checked_and_never_recorded(base: str, llm: FakeLLM) -> None:
    """The SDK sends its key as Bearer; Claude Code's ANTHROPIC_API_KEY comes as x-api-key."""
    with anthropic.Anthropic(base_url=base, api_key="sk-wrong", max_retries=0,
                             timeout=10.0) as wrong, pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model=MODEL, max_tokens=64,
                              messages=[{"role": "user", "content": "x"}])
    body = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "x"}]}
    assert raw(f"{base}/v1/messages", body, headers={"anthropic-version": None})[0] == 400
    assert raw(f"{base}/v1/messages", body, headers={"x-api-key": None})[0] == 401
    assert raw(f"{base}/v1/messages", body)[0] == 200
    assert [(s.auth_scheme, s.key_ok, s.status) for s in llm.requests] == [
        ("bearer", False, 401), ("x-api-key", True, 400), ("none", False, 401),
        ("x-api-key", True, 200)]
    assert KEY not in llm.summary() and "sk-wrong" not in llm.summary()


def test_claude_code_request_shape(base: str, llm: FakeLLM) -> None:
    """What Claude Code 2.1.112 sends for `claude -p hello` (recorded): a HEAD of the
    base URL, then a streamed POST ?beta=true with Bearer, beta headers, thinking and
    context-management fields, its context as <system-reminder> text blocks."""
    status, _ = raw(base, method="HEAD", headers={"x-api-key": None, "anthropic-version": None,
                                                      "content-type": None})
    assert status == 200
    body = {
        "model": MODEL, "max_tokens": 32000, "stream": True,
        "metadata": {"user_id": json.dumps({"device_id": "d", "session_id": "s"})},
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.112"},
                   {"type": "text", "text": "You are a Claude agent.",
                    "cache_control": {"type": "ephemeral"}}],
        "tools": [READ_TOOL, WRITE_TOOL],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nskills...\n</system-reminder>\n"},
            {"type": "text", "text": "<system-reminder>\ncontext\n</system-reminder>\n\n"},
            {"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}]}],
    }
    status, answer = raw(f"{base}/v1/messages?beta=true", body, headers={
        "x-api-key": None, "authorization": f"Bearer {KEY}", "x-app": "cli",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
                          "context-management-2025-06-27",
        "anthropic-dangerous-direct-browser-access": "true"})
    assert status == 200, answer
    text = "".join(d["delta"]["text"] for name, d in events(answer)
                   if name == "content_block_delta")
    assert text == "fake-llm heard: hello"
    probe, call = llm.requests
    assert (probe.method, probe.path, probe.kind, probe.status) == ("HEAD", PREFIX, "probe", 200)
    assert (call.query, call.auth_scheme, call.key_ok, call.text) == ("beta=true", "bearer",
                                                                      True, "hello")


def test_records_are_bounded(base: str, llm: FakeLLM) -> None:
    llm.max_records, before = 3, llm.dropped
    try:
        for i in range(5):
            raw(f"{base}/v1/messages", {"model": MODEL, "max_tokens": 8,
                                        "messages": [{"role": "user", "content": f"n{i}"}]})
        assert [s.text for s in llm.requests] == ["n2", "n3", "n4"]
        assert llm.dropped - before == 2
    finally:
        llm.max_records = MAX_RECORDS
