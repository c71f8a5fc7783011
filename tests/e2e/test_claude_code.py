"""The Claude Code lane (issue 18 part 3) end to end: a real `wsctl run`, a real
wsctl/agent-claude-code:latest container running the real Claude Code 2.1.112 under
Debian's node 18, the LLM gateway, and the fake provider (MiniMax's /anthropic
prefix) on the workspace network's gateway address.

`wsctl send` is answered by Claude Code through the A2A front; the provider sees
`/anthropic/v1/messages` (the user's `.../anthropic/v1/` base URL, never /v1/v1) with
the real key, which only the controller holds; Claude Code writes a file in
/workspace in a real tool-use turn (the fake answers `[[write ...]]` with a Write
call); after `wsctl restart` it answers again and the file is still there; a
provider that refuses the key is an A2A error naming the 401, in seconds.
"""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from controller.app.cli import main
from controller.testing.fake_llm import Seen, write_directive
from controller.testing.harness import ControllerProcess, FakeLLMThread, phase, wait_for
from tests.e2e.conftest import PLANTED_KEY
from tests.e2e.dockerutil import container_env

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

KEY = "mm-e2e-CLAUDE-CODE-" + secrets.token_hex(12)
SECRET = ("cc-llm", "api-key")
NAME = "cc"
NOTE = "notes-by-claude.txt"
CONTENT = "written by Claude Code " + secrets.token_hex(4)


@pytest.fixture(scope="module")
def upstream(gateway: str) -> Iterator[FakeLLMThread]:
    server = FakeLLMThread(gateway, KEY, prefix="/anthropic").start()
    yield server
    server.stop()


@pytest.fixture
def purge(controller: ControllerProcess) -> Iterator[None]:
    """The workspace and its volume go after the test (its files are the test's)."""
    yield
    controller.cli("delete", NAME, "--purge")


def manifest(image: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace", "metadata": {"name": NAME},
        "spec": {"image": image, "model": "MiniMax-M3", "startupTimeoutSeconds": 120,
                 "llm": {"provider": "minimax", "access": "gateway",
                         # as users write it: the trailing /v1/ is normalised away
                         "baseURL": f"http://host.docker.internal:{port}/anthropic/v1/",
                         "apiKey": {"secretRef": {"name": SECRET[0], "key": SECRET[1]}}}},
    }


def online(controller: ControllerProcess, not_container: str | None = None) -> str:
    def ready() -> str | None:
        obj = controller.get(NAME)
        cid = (obj.get("status") or {}).get("containerID")
        return str(cid) if phase(obj) == "Online" and cid not in (None, not_container) \
            else None
    return wait_for(ready, 120, f"{NAME} Online")


def send(controller: ControllerProcess, text: str) -> str:
    code, out, err = controller.cli("send", NAME, text)
    assert code == 0, out + err
    return out


def messages_since(upstream: FakeLLMThread, start: int) -> list[Seen]:
    return [s for s in upstream.llm.requests[start:] if s.kind != "probe"]


def in_container(client: docker.DockerClient, cid: str, *cmd: str) -> tuple[int, str]:
    code, output = client.containers.get(cid).exec_run(list(cmd), user="10001")
    assert isinstance(code, int) and isinstance(output, bytes)
    return code, output.decode(errors="replace")


def assert_no_real_key(client: docker.DockerClient, cid: str) -> None:
    """Neither the environment nor any file the agent or Claude Code wrote holds it."""
    env = container_env(client, cid)
    assert not [n for n, v in env.items() if KEY in v or PLANTED_KEY in v]
    code, found = in_container(client, cid, "grep", "-rlF", KEY, "/home/agent", "/workspace",
                               "/configs", "/tmp")
    assert code == 1 and found == "", found  # grep: 1 = no file holds it


def test_claude_code_answers_through_the_gateway_writes_and_survives_a_restart(
        controller: ControllerProcess, claude_code_image: str, upstream: FakeLLMThread,
        purge: None, docker_client: docker.DockerClient,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    assert main(["secret", "set", *SECRET, "--data-dir", str(controller.data_dir)]) == 0
    capsys.readouterr()
    controller.apply(manifest(claude_code_image, upstream.port))
    first = online(controller)
    env = container_env(docker_client, first)
    assert env["ANTHROPIC_BASE_URL"] == \
        f"http://host.docker.internal:{controller.registry_port}/llm/minimax"
    assert env["ANTHROPIC_MODEL"] == env["ANTHROPIC_SMALL_FAST_MODEL"] == "MiniMax-M3"

    # 1. a plain message: Claude Code's answer is the fake's, through the gateway
    start = len(upstream.llm.requests)
    out = send(controller, "hello claude")
    assert "fake-llm heard: hello claude" in out, out
    calls = messages_since(upstream, start)
    assert calls, "Claude Code never reached the provider"
    for seen in calls:  # one /v1, the real key as Bearer (the gateway put it there)
        assert (seen.path, seen.auth_scheme, seen.key_ok, seen.status, seen.model) == \
            ("/anthropic/v1/messages", "bearer", True, 200, "MiniMax-M3"), seen
        assert "/v1/v1" not in seen.path
    assert calls[-1].streamed and calls[-1].model == "MiniMax-M3"
    assert "beta=true" in calls[-1].query  # it really was Claude Code calling

    # 2. a tool-use turn: Claude Code itself writes the file in /workspace
    start = len(upstream.llm.requests)
    out = send(controller, write_directive(NOTE, CONTENT))
    assert f"wrote /workspace/{NOTE}" in out, out
    turn = messages_since(upstream, start)
    assert turn[0].tool_use == {"file_path": f"/workspace/{NOTE}", "content": CONTENT}
    assert turn[-1].tool_result is not None and "error" not in turn[-1].tool_result.lower()
    assert in_container(docker_client, first, "cat", f"/workspace/{NOTE}") == (0, CONTENT)
    assert_no_real_key(docker_client, first)

    # 3. restart: a new container answers again, and the file is still there
    code, _, err = controller.cli("restart", NAME)
    assert code == 0, err
    second = online(controller, not_container=first)
    assert second != first
    start = len(upstream.llm.requests)
    out = send(controller, "after restart")
    assert "fake-llm heard: after restart" in out, out
    assert [(s.path, s.key_ok) for s in messages_since(upstream, start)] == \
        [("/anthropic/v1/messages", True)] * len(messages_since(upstream, start))
    assert in_container(docker_client, second, "cat", f"/workspace/{NOTE}") == (0, CONTENT)
    assert_no_real_key(docker_client, second)

    # 4. a provider that refuses the key: an A2A error with Claude Code's message, in
    #    seconds (not after Claude Code's ten retries), with no key or credential in it
    upstream.llm.api_key = "mm-rotated-elsewhere"
    try:
        began = time.monotonic()
        code, out, err = controller.cli("send", NAME, "refused")
        elapsed = time.monotonic() - began
    finally:
        upstream.llm.api_key = KEY
    assert code != 0 and "Claude Code failed (LLM API answered 401)" in out + err, out + err
    credential = container_env(docker_client, second)["ANTHROPIC_AUTH_TOKEN"]
    assert KEY not in out + err and credential not in out + err
    assert elapsed < 30, elapsed
