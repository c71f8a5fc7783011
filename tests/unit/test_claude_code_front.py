"""The Claude Code front (controller/agent/claude_code.py) against a fake `claude`: a
script that records how it was run and prints what Claude Code's `--output-format
json` prints. The real Claude Code runs in tests/e2e/test_claude_code.py."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controller.agent import claude_code, kit
from controller.agent.claude_code import QUIET, ClaudeError, Front, ask_claude, claude_env
from tests.unit.helpers import A2A_CREDENTIAL, a2a, message_send

TOKEN = "gw-credential-" + "x" * 29


@pytest.fixture(autouse=True)
def fallback_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The front's fallback HOME (/tmp/claude-home in the image), here under tmp_path."""
    home = tmp_path / "fallback-home"
    monkeypatch.setattr(claude_code, "FALLBACK_HOME", str(home))
    return home


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


def workspace(tmp_path: Path) -> str:
    folder = tmp_path / "workspace"
    folder.mkdir(exist_ok=True)
    return str(folder)


def result(text: str, **extra: Any) -> str:
    return json.dumps({"type": "result", "subtype": "success", "is_error": False,
                       "result": text, "num_turns": 1, **extra}) + "\n"


def environ(script: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": "/", "WSCTL_CLAUDE_BIN": str(script),
            "ANTHROPIC_AUTH_TOKEN": TOKEN, **extra}


def test_the_answer_is_claude_codes_result_run_in_the_workspace(tmp_path: Path) -> None:
    script = fake_claude(tmp_path, "some warning line\n" + result("the answer"))
    cwd = workspace(tmp_path)
    answer = ask_claude("--not-a-flag write hello.txt", environ(script), cwd)
    assert answer == "the answer"
    seen = calls(tmp_path)
    # on stdin: a text starting with - is no option
    assert seen["stdin"] == "--not-a-flag write hello.txt"
    assert seen["argv"] == ["-p", "--output-format", "json", "--permission-mode",
                            "acceptEdits"]
    assert seen["cwd"] == cwd
    env = seen["env"]
    assert {k: env[k] for k in QUIET} == QUIET
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "2"  # a 401 surfaces in seconds, not minutes
    assert env["ANTHROPIC_AUTH_TOKEN"] == TOKEN  # the projected environment goes through
    assert env["HOME"] == claude_code.FALLBACK_HOME  # "/" is no home for Claude Code
    assert Path(env["HOME"]).is_dir()  # made for it: without one it exits 0, silent


def test_permission_mode_and_retries_can_be_changed(tmp_path: Path) -> None:
    script = fake_claude(tmp_path, result("ok"))
    ask_claude("hi", environ(script, WSCTL_CLAUDE_PERMISSION_MODE="bypassPermissions",
                             CLAUDE_CODE_MAX_RETRIES="5"), workspace(tmp_path))
    assert calls(tmp_path)["argv"][-2:] == ["--permission-mode", "bypassPermissions"]
    assert calls(tmp_path)["env"]["CLAUDE_CODE_MAX_RETRIES"] == "5"


def test_a_writable_home_is_kept_or_made_and_a_read_only_one_replaced(
        tmp_path: Path, fallback_home: Path) -> None:
    assert claude_env({"HOME": str(tmp_path)})["HOME"] == str(tmp_path)
    missing = tmp_path / "not-yet" / "home"
    assert claude_env({"HOME": str(missing)})["HOME"] == str(missing) and missing.is_dir()
    # a HOME that cannot be made (as /home/agent on the read-only root filesystem)
    (tmp_path / "a-file").write_text("")
    unusable = tmp_path / "a-file" / "home"
    assert claude_env({"HOME": str(unusable)})["HOME"] == str(fallback_home)
    assert fallback_home.is_dir()


def test_a_claude_code_error_names_its_status_without_the_credential(tmp_path: Path) -> None:
    failed = json.dumps({"type": "result", "subtype": "success", "is_error": True,
                         "api_error_status": 401,
                         "result": f"API Error: 401 invalid token {TOKEN}"}) + "\n"
    script = fake_claude(tmp_path, failed, code=1)
    with pytest.raises(ClaudeError) as raised:
        ask_claude("hi", environ(script), workspace(tmp_path))
    message = str(raised.value)
    assert message.startswith(
        "Claude Code failed (LLM API answered 401): API Error: 401 invalid token")
    assert TOKEN not in message and "<redacted>" in message
    assert raised.value.status == 401


def test_no_json_is_an_error_with_stderr(tmp_path: Path) -> None:
    script = fake_claude(tmp_path, "", code=3, stderr=f"boom\nnode crashed near {TOKEN}\n")
    with pytest.raises(ClaudeError, match=r"^Claude Code exited with 3: boom node crashed") as e:
        ask_claude("hi", environ(script), workspace(tmp_path))
    assert TOKEN not in str(e.value)


def test_a_missing_binary_and_a_timeout_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ClaudeError, match="Claude Code cannot run: FileNotFoundError"):
        ask_claude("hi", environ(tmp_path / "nothing-here"), workspace(tmp_path))
    # a hung run: it and what it started are killed (the grandchild writes its pid)
    slow = tmp_path / "slow"
    slow.write_text(f"#!/bin/sh\nsleep 30 &\necho $! > {tmp_path}/child.pid\nwait\n")
    slow.chmod(0o755)
    began = time.monotonic()
    with pytest.raises(ClaudeError, match=r"no answer within 0\.5s"):
        ask_claude("hi", environ(slow, WSCTL_CLAUDE_TIMEOUT_SECONDS="0.5"), workspace(tmp_path))
    # killing only the first process would leave its child holding the output pipe:
    # the front would wait for it (30 s here)
    assert time.monotonic() - began < 5
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{child}").exists() \
            and "Z" not in Path(f"/proc/{child}/stat").read_text().split()[2]:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or \
        Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"


def test_no_credential_runs_nothing(tmp_path: Path) -> None:
    script = fake_claude(tmp_path, result("never"))
    env = environ(script)
    del env["ANTHROPIC_AUTH_TOKEN"]
    with pytest.raises(ClaudeError, match="LLM not configured"):
        ask_claude("hi", env, workspace(tmp_path))
    assert not (tmp_path / "calls.json").exists()


A2A = A2A_CREDENTIAL


def send(text: str) -> dict[str, Any]:
    return message_send(text, contextId="ctx-1")


def test_a2a_message_send_is_answered_through_the_front_on_the_kit(tmp_path: Path) -> None:
    script = fake_claude(tmp_path, result("written hello.txt"))
    (tmp_path / "a2a").write_text(A2A + "\n")
    agent = kit.Agent("default.cc", "http://127.0.0.1:1", port=0,
                      a2a_credential_file=str(tmp_path / "a2a"),
                      workspace_dir=workspace(tmp_path))
    front = Front(agent, environ(script), host="127.0.0.1")
    port = front.server_address[1]
    threading.Thread(target=front.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        status, answered = a2a(port, send("write hello.txt"))
        assert status == 200
        assert answered["result"]["parts"] == [{"kind": "text", "text": "written hello.txt"}]
        assert answered["result"]["contextId"] == "ctx-1"
        assert calls(tmp_path)["stdin"] == "write hello.txt"
        assert calls(tmp_path)["cwd"] == agent.workspace_dir
        assert front.health() == kit.Health(active_tasks=0)
        # a refused credential: 401, and Claude Code is not run
        (tmp_path / "calls.json").unlink()
        status, refused = a2a(port, send("not you"), credential="a2a-wrong")
        assert status == 401 and refused["error"]["class"] == "unauthorized"
        assert not (tmp_path / "calls.json").exists()
        # a Claude Code failure: an A2A error with its message; a 401 marks health
        failed_json = json.dumps({"type": "result", "subtype": "success", "is_error": True,
                                  "api_error_status": 401,
                                  "result": "API Error: 401 stale_credential"})
        fake_claude(tmp_path, failed_json + "\n", code=1)
        status, failed = a2a(port, send("again"))
        assert status == 200
        assert failed["error"] == {"code": -32000, "message": "Claude Code failed (LLM API "
                                   "answered 401): API Error: 401 stale_credential"}
        health = front.health()
        assert health.status == "unhealthy" and "llm-auth" in str(health.detail)
        # the controller's restart context is acknowledged without running Claude Code
        (tmp_path / "calls.json").unlink()
        status, noted = a2a(port, send("[system:restart-context] This workspace's "
                                        "container was recreated (reason: X)."))
        assert status == 200 and noted["result"]["parts"][0]["text"].startswith("noted")
        assert not (tmp_path / "calls.json").exists()
        # an unknown method is refused without running anything
        status, unknown = a2a(port, {"jsonrpc": "2.0", "id": 1, "method": "tasks/get"})
        assert unknown["error"]["code"] == -32601
    finally:
        front.shutdown()
        front.server_close()


def test_the_restart_context_prefix_is_the_one_the_controller_sends() -> None:
    from controller.core.model import WorkspaceStatus
    from controller.core.observed import ObservedContainer
    from controller.core.plan import _restart_context
    sent = _restart_context(WorkspaceStatus(restart_count=1),
                            ObservedContainer("c", "n", "default.a", "running", "h", 2))
    assert sent.startswith(claude_code.RESTART_CONTEXT)
