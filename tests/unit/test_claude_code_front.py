"""The Claude Code front (controller/agent/claude_code.py) against a fake `claude`: a
script that records how it was run and prints what Claude Code's `--output-format
json` prints. The real Claude Code runs in tests/e2e/test_claude_code.py."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controller.agent import claude_code
from controller.agent.claude_code import QUIET, claude_env, complete
from controller.agent.config import Config
from controller.agent.llm import LLMError
from controller.agent.server import AgentServer, handle_rpc
from controller.agent.state import AgentState

TOKEN = "gw-credential-" + "x" * 29


def fake_claude(tmp_path: Path, stdout: str, *, code: int = 0, stderr: str = "") -> Path:
    """A `claude` that writes its argv, cwd, stdin and environment to calls.json."""
    script = tmp_path / "claude"
    record = tmp_path / "calls.json"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps({{'argv': sys.argv[1:], "
        "'cwd': os.getcwd(), 'stdin': sys.stdin.read(), 'env': dict(os.environ)}))\n"
        f"sys.stdout.write({stdout!r})\n"
        f"sys.stderr.write({stderr!r})\n"
        f"sys.exit({code})\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def calls(tmp_path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((tmp_path / "calls.json").read_text())
    return value


def config(tmp_path: Path) -> Config:
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    return Config(workspace_id="default.cc", workspace_name="cc",
                  registry_url="http://127.0.0.1:1", anthropic_auth_token=TOKEN,
                  workspace_dir=str(workspace), bind_host="127.0.0.1", port=0)


def result(text: str, **extra: Any) -> str:
    return json.dumps({"type": "result", "subtype": "success", "is_error": False,
                       "result": text, "num_turns": 1, **extra}) + "\n"


def environ(script: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": "/", "WSCTL_CLAUDE_BIN": str(script),
            "ANTHROPIC_AUTH_TOKEN": TOKEN, **extra}


def test_the_answer_is_claude_codes_result_run_in_the_workspace(tmp_path: Path) -> None:
    script = fake_claude(tmp_path, "some warning line\n" + result("the answer"))
    cfg = config(tmp_path)
    answer = complete(cfg, [{"role": "user", "content": "earlier"},
                            {"role": "assistant", "content": "ok"},
                            {"role": "user", "content": "--not-a-flag write hello.txt"}],
                      environ(script))
    assert answer == "the answer"
    seen = calls(tmp_path)
    # the newest message only, on stdin (a text starting with - is no option)
    assert seen["stdin"] == "--not-a-flag write hello.txt"
    assert seen["argv"] == ["-p", "--output-format", "json", "--permission-mode",
                            "acceptEdits"]
    assert seen["cwd"] == cfg.workspace_dir
    env = seen["env"]
    assert {k: env[k] for k in QUIET} == QUIET
    assert env["ANTHROPIC_AUTH_TOKEN"] == TOKEN  # the projected environment goes through
    assert env["HOME"] == claude_code.FALLBACK_HOME  # "/" is not writable for the agent


def test_permission_mode_can_be_changed(tmp_path: Path) -> None:
    script = fake_claude(tmp_path, result("ok"))
    complete(config(tmp_path), [{"role": "user", "content": "hi"}],
             environ(script, WSCTL_CLAUDE_PERMISSION_MODE="bypassPermissions"))
    assert calls(tmp_path)["argv"][-2:] == ["--permission-mode", "bypassPermissions"]


def test_a_writable_home_is_kept(tmp_path: Path) -> None:
    assert claude_env({"HOME": str(tmp_path)})["HOME"] == str(tmp_path)


def test_a_claude_code_error_is_an_llm_error_without_the_credential(tmp_path: Path) -> None:
    failed = json.dumps({"type": "result", "subtype": "success", "is_error": True,
                         "api_error_status": 401,
                         "result": f"API Error: 401 invalid token {TOKEN}"}) + "\n"
    script = fake_claude(tmp_path, failed, code=1)
    with pytest.raises(LLMError) as raised:
        complete(config(tmp_path), [{"role": "user", "content": "hi"}], environ(script))
    message = str(raised.value)
    assert message.startswith("Claude Code failed: API Error: 401 invalid token")
    assert TOKEN not in message and "<redacted>" in message
    assert raised.value.is_auth_error


def test_no_json_is_an_error_with_stderr(tmp_path: Path) -> None:
    script = fake_claude(tmp_path, "", code=3, stderr=f"boom\nnode crashed near {TOKEN}\n")
    with pytest.raises(LLMError, match=r"^Claude Code exited with 3: boom node crashed") as e:
        complete(config(tmp_path), [{"role": "user", "content": "hi"}], environ(script))
    assert TOKEN not in str(e.value)


def test_a_missing_binary_and_a_timeout_are_errors(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="Claude Code cannot run: FileNotFoundError"):
        complete(config(tmp_path), [{"role": "user", "content": "hi"}],
                 environ(tmp_path / "nothing-here"))
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    with pytest.raises(LLMError, match="no answer within 0s"):
        complete(config(tmp_path), [{"role": "user", "content": "hi"}],
                 environ(slow, WSCTL_CLAUDE_TIMEOUT_SECONDS="0.2"))


def test_no_credential_runs_nothing(tmp_path: Path) -> None:
    script = fake_claude(tmp_path, result("never"))
    cfg = replace(config(tmp_path), anthropic_auth_token=None)
    with pytest.raises(LLMError, match="LLM not configured"):
        complete(cfg, [{"role": "user", "content": "hi"}], environ(script))
    assert not (tmp_path / "calls.json").exists()


def test_a2a_message_send_is_answered_through_the_front(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = fake_claude(tmp_path, result("written hello.txt"))
    monkeypatch.setenv("WSCTL_CLAUDE_BIN", str(script))
    cfg = config(tmp_path)
    server = AgentServer(cfg, AgentState(cfg), claude_code.complete)
    try:
        def send(text: str) -> dict[str, Any]:
            return handle_rpc(server, json.dumps({
                "jsonrpc": "2.0", "id": 7, "method": "message/send",
                "params": {"message": {"role": "user", "parts": [{"kind": "text",
                                                                  "text": text}]}}}).encode())

        answered = send("write hello.txt")
        assert answered["result"]["parts"] == [{"kind": "text", "text": "written hello.txt"}]
        fake_claude(tmp_path, "", code=1, stderr="no route to the LLM\n")
        failed = send("again")
        assert failed["error"]["message"] == "Claude Code exited with 1: no route to the LLM"
    finally:
        server.server_close()
