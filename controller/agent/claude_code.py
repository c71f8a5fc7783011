"""The Claude Code front: ``python3 -m wsctl_agent.claude_code`` in
``wsctl/agent-claude-code:latest`` (docs/claude-code.md).

An A2A agent on the agent kit (``kit.py``, nothing else of the reference agent): the
kit registers, heartbeats, follows the token and serves the A2A port (the controller's
credential, JSON-RPC); this file answers each ``message/send`` by running Claude Code,
``claude -p --output-format json --permission-mode acceptEdits`` with the message on
stdin, in the workspace (``WSCTL_WORKSPACE_DIR``, /workspace), with the environment
the controller projected (``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_AUTH_TOKEN`` /
``ANTHROPIC_MODEL``) plus what keeps Claude Code quiet offline (and at most 2
retries of a failed LLM call, ``CLAUDE_CODE_MAX_RETRIES``).
Claude Code's ``result`` is the answer; a failure is an A2A error with Claude
Code's own message, the credential taken out.

Knobs: ``WSCTL_CLAUDE_BIN`` (default ``claude``), ``WSCTL_CLAUDE_PERMISSION_MODE``
(default ``acceptEdits``: writes and edits need no prompt; shell commands stay
refused in ``-p`` mode), ``WSCTL_CLAUDE_TIMEOUT_SECONDS`` (default 110, under the
controller's 120 s A2A timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

from . import kit

DEFAULT_PERMISSION_MODE = "acceptEdits"
DEFAULT_TIMEOUT_SECONDS = 110.0
FALLBACK_HOME = "/tmp/claude-home"  # noqa: S108 - the container's own tmpfs
QUIET = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
}
DEFAULTS = {"CLAUDE_CODE_MAX_RETRIES": "2"}
"""Unless the workspace's env says otherwise: Claude Code retries a failed call 10
times with backoff by default, 401s included, so a bad credential took minutes to
surface and the controller's A2A call (120 s) gave up first."""
MAX_ERROR_CHARS = 400
VERSION = "0.1.0"
RESTART_CONTEXT = "[system:restart-context]"
"""How the controller's message after a recreate begins (core/plan.py)."""
log = kit.stderr_log


class ClaudeError(Exception):
    """Claude Code gave no answer; the message is its own, without the credential."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The LLM API's HTTP status when Claude Code names one (401: a bad credential)."""


# -- running Claude Code ---------------------------------------------------------------


def _usable_home(path: str) -> bool:
    """A folder Claude Code can write (it writes ~/.claude.json and ~/.claude/ and
    exits 0 with no output at all when it cannot), made if missing."""
    if not path or path == "/":
        return False
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


def claude_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The process environment for Claude Code: the projected one, the quiet switches,
    and a HOME it can write: the container's root filesystem is read-only, so the
    image's HOME is on /tmp (a tmpfs), with FALLBACK_HOME when that is not usable."""
    env = {**DEFAULTS, **environ, **QUIET}
    if not _usable_home(env.get("HOME", "")):
        env["HOME"] = FALLBACK_HOME
        _usable_home(FALLBACK_HOME)  # made if it can be; Claude Code says what fails
    return env


def claude_command(environ: Mapping[str, str]) -> list[str]:
    mode = environ.get("WSCTL_CLAUDE_PERMISSION_MODE", "").strip() or DEFAULT_PERMISSION_MODE
    return [environ.get("WSCTL_CLAUDE_BIN", "").strip() or "claude",
            "-p", "--output-format", "json", "--permission-mode", mode]


def _timeout(environ: Mapping[str, str]) -> float:
    try:
        return float(environ.get("WSCTL_CLAUDE_TIMEOUT_SECONDS", "").strip()
                     or DEFAULT_TIMEOUT_SECONDS)
    except ValueError:
        return DEFAULT_TIMEOUT_SECONDS


def _credentials(environ: Mapping[str, str]) -> list[str]:
    return [v for k in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY")
            if (v := environ.get(k, "").strip())]


def _clean(text: str, secrets: list[str]) -> str:
    """One line, no credential, at most MAX_ERROR_CHARS."""
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _last_json_object(stdout: str) -> dict[str, Any] | None:
    """The ``--output-format json`` result: the last line that is a JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            value: Any = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _run(command: list[str], prompt: str, cwd: str, env: dict[str, str],
         timeout: float) -> subprocess.CompletedProcess[str]:
    """Run Claude Code in a session of its own: on timeout the whole group goes (the
    tools it started too), not only node."""
    try:
        proc = subprocess.Popen(  # a fixed program; the prompt goes on stdin, never argv
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, errors="replace", cwd=cwd, env=env, start_new_session=True)
    except OSError as exc:
        raise ClaudeError(f"Claude Code cannot run: {type(exc).__name__}: {exc.strerror}") \
            from None
    with proc:
        try:
            out, err = proc.communicate(prompt, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ClaudeError(f"Claude Code gave no answer within {timeout:g}s") from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def ask_claude(prompt: str, environ: Mapping[str, str], cwd: str) -> str:
    """One ``claude -p`` run in ``cwd``; its ``result`` text, else `ClaudeError`."""
    secrets = _credentials(environ)
    if not secrets:
        raise ClaudeError("LLM not configured: no ANTHROPIC_AUTH_TOKEN or ANTHROPIC_API_KEY set")
    timeout = _timeout(environ)
    run = _run(claude_command(environ), prompt, cwd, claude_env(environ), timeout)
    result = _last_json_object(run.stdout)
    if result is None:
        detail = run.stderr.strip() or run.stdout.strip() or "no output"
        raise ClaudeError(f"Claude Code exited with {run.returncode}: {_clean(detail, secrets)}")
    status = result.get("api_error_status")
    if result.get("is_error") or result.get("subtype") != "success" or run.returncode != 0:
        what = result.get("result") or result.get("subtype") or f"exit {run.returncode}"
        api = f" (LLM API answered {status})" if isinstance(status, int) else ""
        raise ClaudeError(f"Claude Code failed{api}: {_clean(str(what), secrets)}",
                          status if isinstance(status, int) else None)
    text = result.get("result")
    if not isinstance(text, str):
        raise ClaudeError("Claude Code answered without a result text")
    log("info", "claude_code_answered", turns=result.get("num_turns"),
        duration_ms=result.get("duration_ms"))
    return text


# -- the A2A port ----------------------------------------------------------------------


class Front(kit.A2AServer):
    def __init__(self, agent: kit.Agent, environ: Mapping[str, str],
                 host: str = "0.0.0.0") -> None:  # noqa: S104 - the controller calls in
        self.environ = environ
        self.cwd = agent.workspace_dir or "/workspace"
        self._lock = threading.Lock()
        self._active = 0
        self._llm_error: str | None = None
        super().__init__(agent, self.answer, lambda: self.card(agent.claimed_url()),
                         self.health, address=(host, agent.port),
                         server_version="wsctl-claude-code")

    def card(self, url: str) -> dict[str, Any]:
        return {
            "name": self.agent.workspace_name,
            "description": f"Claude Code for workspace {self.agent.workspace_id}",
            "url": url, "version": VERSION, "protocolVersion": "0.3.0",
            "preferredTransport": "JSONRPC", "defaultInputModes": ["text/plain"],
            "defaultOutputModes": ["text/plain"], "capabilities": {},
            "skills": [{"id": "code", "name": "Code",
                        "description": "Works in the workspace with Claude Code.",
                        "tags": ["code", "claude-code"]}],
        }

    def health(self) -> kit.Health:
        with self._lock:
            active, error = self._active, self._llm_error
        if not _credentials(self.environ):
            return kit.Health.unhealthy("llm-auth: no ANTHROPIC_AUTH_TOKEN set", active)
        return kit.Health.unhealthy(error, active) if error else kit.Health(active_tasks=active)

    def answer(self, text: str) -> str:
        """One message's text -> Claude Code's answer (an A2AError when it fails)."""
        if text.startswith(RESTART_CONTEXT):
            # The controller's note after a recreate: every message here is a fresh
            # `claude -p` already, so there is nothing to restore and no LLM call to pay.
            log("info", "restart_context", detail=text[:200])
            return "noted: restart context"
        with self._lock:
            self._active += 1
        try:
            reply = ask_claude(text, self.environ, self.cwd)
        except ClaudeError as exc:
            if exc.status in (401, 403):
                with self._lock:
                    self._llm_error = f"llm-auth: {exc}"
            log("warning", "message_failed", error=str(exc))
            raise kit.A2AError(str(exc)) from None
        finally:
            with self._lock:
                self._active -= 1
        with self._lock:
            self._llm_error = None
        return reply


# -- main ------------------------------------------------------------------------------


def main() -> int:
    try:
        agent = kit.Agent.from_environment(user_agent="wsctl-claude-code")
    except kit.ConfigError as exc:
        log("error", "config_invalid", error=str(exc))
        return 2
    front = Front(agent, os.environ)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log("info", "signal", name=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=front.serve_forever, kwargs={"poll_interval": 0.1},
                     name="a2a-http", daemon=True).start()
    log("info", "start", workspace_id=agent.workspace_id, port=agent.port, cwd=front.cwd,
        claude=claude_command(os.environ)[0])

    def register_then_beat() -> None:
        try:
            agent.register(front.card(agent.claimed_url()))
            agent.run_heartbeats(front.health)
        except kit.Stopped:
            return
        except kit.KitError as exc:  # a protocol mismatch: nothing to retry
            log("error", "registry_gave_up", error=str(exc))

    threading.Thread(target=register_then_beat, name="registry", daemon=True).start()
    stop.wait()
    agent.stop()
    front.shutdown()
    front.server_close()
    log("info", "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
