"""Minimal Anthropic Messages API client (urllib only)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

from .config import Config

ANTHROPIC_VERSION = "2023-06-01"
MAX_TOKENS = 1024
TIMEOUT_SECONDS = 120.0


class LLMError(Exception):
    """The LLM call failed. The message never contains a credential."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def is_auth_error(self) -> bool:
        return self.status in (401, 403)


def messages_url(base_url: str) -> str:
    """``{base}/v1/messages``, tolerating a trailing ``/`` or ``/v1`` on the base."""
    base = base_url.strip().rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")].rstrip("/")
    return base + "/v1/messages"


def auth_headers(config: Config) -> dict[str, str]:
    if config.anthropic_auth_token:
        return {"Authorization": f"Bearer {config.anthropic_auth_token}"}
    if config.anthropic_api_key:
        return {"x-api-key": config.anthropic_api_key}
    return {}


def complete(config: Config, messages: list[dict[str, str]]) -> str:
    """Send the conversation (earlier turns, then the new user message); return the
    joined text blocks of the reply."""
    if not config.has_llm_credential:
        raise LLMError("LLM not configured: no ANTHROPIC_AUTH_TOKEN or ANTHROPIC_API_KEY set")
    url = messages_url(config.anthropic_base_url)
    payload = {
        "model": config.anthropic_model,
        "max_tokens": MAX_TOKENS,
        "messages": messages,
    }
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "anthropic-version": ANTHROPIC_VERSION,
        "User-Agent": "wsctl-agent",
        **auth_headers(config),
    }
    req = urllib.request.Request(  # noqa: S310 - URL comes from the controller's env
        url, data=json.dumps(payload).encode("utf-8"), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as resp:  # noqa: S310
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        kind = _error_type(exc.read() if exc.fp is not None else b"")
        suffix = f" ({kind})" if kind else ""
        raise LLMError(f"LLM API answered HTTP {exc.code}{suffix}", exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LLMError(f"LLM API unreachable: {type(exc).__name__}: {reason}") from None
    try:
        body: Any = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise LLMError("LLM API answered a body that is not JSON") from None
    return reply_text(body)


def reply_text(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise LLMError("LLM API answered without a content list")
    texts = [
        block["text"]
        for block in body["content"]
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]
    return "".join(texts)


def _error_type(raw: bytes) -> str:
    """The Anthropic error type (e.g. ``authentication_error``), sanitized; never the message."""
    try:
        body = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return ""
    err = body.get("error") if isinstance(body, dict) else None
    kind = err.get("type") if isinstance(err, dict) else None
    if isinstance(kind, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", kind):
        return kind
    return ""
