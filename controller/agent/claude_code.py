"""The Claude Code front: ``python3 -m wsctl_agent.claude_code`` in
``wsctl/agent-claude-code:latest``.

The reference agent's pieces (registration, heartbeats, token, the A2A server and its
credential check) with one change: each A2A ``message/send`` is answered by running
Claude Code, ``claude -p --output-format json`` with the message on stdin, in the
workspace (``WSCTL_WORKSPACE_DIR``, /workspace), with the environment the controller
projected (``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_AUTH_TOKEN`` / ``ANTHROPIC_MODEL``)
plus what keeps Claude Code quiet offline. Its ``result`` is the answer; a failure is
an A2A error with Claude Code's own message, with the credential taken out.

Knobs: ``WSCTL_CLAUDE_BIN`` (default ``claude``), ``WSCTL_CLAUDE_PERMISSION_MODE``
(default ``acceptEdits``: file writes and edits in the workspace need no prompt; shell
commands stay refused in ``-p`` mode), ``WSCTL_CLAUDE_TIMEOUT_SECONDS`` (default 110,
under the controller's 120 s A2A timeout).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from . import log
from .__main__ import main as agent_main
from .config import Config
from .llm import LLMError

DEFAULT_PERMISSION_MODE = "acceptEdits"
DEFAULT_TIMEOUT_SECONDS = 110.0
FALLBACK_HOME = "/home/agent"
QUIET = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
}
MAX_ERROR_CHARS = 400


def claude_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The process environment for Claude Code: the projected one, the quiet switches,
    and a HOME it can write (its settings and session files go there)."""
    env = {**environ, **QUIET}
    home = env.get("HOME", "")
    if not home or home == "/" or not os.access(home, os.W_OK):
        env["HOME"] = FALLBACK_HOME
    return env


def claude_command(environ: Mapping[str, str]) -> list[str]:
    mode = environ.get("WSCTL_CLAUDE_PERMISSION_MODE", "").strip() or DEFAULT_PERMISSION_MODE
    return [environ.get("WSCTL_CLAUDE_BIN", "").strip() or "claude",
            "-p", "--output-format", "json", "--permission-mode", mode]


def _timeout(environ: Mapping[str, str]) -> float:
    raw = environ.get("WSCTL_CLAUDE_TIMEOUT_SECONDS", "").strip()
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        return DEFAULT_TIMEOUT_SECONDS


def _clean(text: str, secrets: list[str]) -> str:
    """One line, no credential, at most MAX_ERROR_CHARS."""
    for secret in secrets:
        if secret:
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


def complete(config: Config, messages: list[dict[str, str]],
             environ: Mapping[str, str] | None = None) -> str:
    """Answer the newest user message with Claude Code (earlier turns are not replayed:
    each message is one ``claude -p`` run in the workspace)."""
    env_in = os.environ if environ is None else environ
    if not config.has_llm_credential:
        raise LLMError("LLM not configured: no ANTHROPIC_AUTH_TOKEN or ANTHROPIC_API_KEY set")
    prompt = messages[-1]["content"] if messages else ""
    env = claude_env(env_in)
    secrets = [config.anthropic_auth_token or "", config.anthropic_api_key or ""]
    cwd = config.workspace_dir or "/workspace"
    try:
        run = subprocess.run(
            claude_command(env_in), input=prompt, capture_output=True, text=True,
            errors="replace", cwd=cwd, env=env, timeout=_timeout(env_in), check=False)
    except subprocess.TimeoutExpired:
        raise LLMError(f"Claude Code gave no answer within {_timeout(env_in):.0f}s") from None
    except OSError as exc:
        raise LLMError(f"Claude Code cannot run: {type(exc).__name__}: {exc.strerror}") from None
    result = _last_json_object(run.stdout)
    if result is None:
        detail = run.stderr.strip() or run.stdout.strip() or "no output"
        raise LLMError(f"Claude Code exited with {run.returncode}: {_clean(detail, secrets)}")
    status = result.get("api_error_status")
    if result.get("is_error") or result.get("subtype") != "success" or run.returncode != 0:
        what = result.get("result") or result.get("subtype") or f"exit {run.returncode}"
        raise LLMError(f"Claude Code failed: {_clean(str(what), secrets)}",
                       status if isinstance(status, int) else None)
    text = result.get("result")
    if not isinstance(text, str):
        raise LLMError("Claude Code answered without a result text")
    log.info("claude_code_answered", turns=result.get("num_turns"),
             duration_ms=result.get("duration_ms"))
    return text


def main() -> int:
    return agent_main(complete)


if __name__ == "__main__":
    sys.exit(main())
