"""A second line of defence: known secret values never reach an output.

wsctl never logs or stores secret values on purpose; this catches accidents and
text from elsewhere (an agent's heartbeat detail, a container's last log lines).
Code that handles a secret (projection, the admin token) calls `remember(value)`,
token minting `remember_token(token)`; `redact` replaces every remembered value with
`<redacted:prefix-of-its-hash>`. It runs on every controller log line (a logging
filter), on what is stored for others to read (events, diagnostics log tails,
heartbeat details, register failures, the failure message in status) and on the
admin API's error messages and container logs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any

MIN_LENGTH = 6  # shorter values would redact ordinary words
MAX_TOKENS = 8192
"""Minted agent tokens kept for redaction, newest first out last. A workspace has
at most two valid tokens (the current one and a refreshed one not yet expired),
so this covers thousands of workspaces; older tokens are revoked or expired."""

_lock = threading.Lock()
_secrets: set[str] = set()
_tokens: OrderedDict[str, None] = OrderedDict()
_ordered: list[str] | None = None  # every remembered value, longest first (a cache)


def remember(*values: str) -> None:
    """Secret values (resolved secrets, the admin token): kept for the process's life."""
    global _ordered
    new = {v for v in values if len(v) >= MIN_LENGTH} - _secrets
    if new:  # every reconcile remembers its secrets again: only news drop the cache
        with _lock:
            _secrets.update(new)
            _ordered = None


def remember_token(token: str) -> None:
    """A minted agent token: kept until MAX_TOKENS newer ones were minted. With
    spec.tokenExpirationSeconds tokens are minted without end; remembering every
    one would grow the process and every redaction without bound."""
    global _ordered
    if len(token) < MIN_LENGTH:
        return
    with _lock:
        if token in _tokens:  # known (the A2A proxy's per-call credential): no news
            _tokens.move_to_end(token)
            return
        _tokens[token] = None
        while len(_tokens) > MAX_TOKENS:
            _tokens.popitem(last=False)
        _ordered = None


def forget_all() -> None:
    global _ordered
    with _lock:
        _secrets.clear()
        _tokens.clear()
        _ordered = None


def _values() -> list[str]:
    global _ordered
    with _lock:
        if _ordered is None:
            _ordered = sorted(_secrets | _tokens.keys(), key=len, reverse=True)
        return _ordered


def redact(text: str) -> str:
    for value in _values():
        if value in text:
            tag = hashlib.sha256(value.encode()).hexdigest()[:8]
            text = text.replace(value, f"<redacted:{tag}>")
    return text


def redact_json(value: Any) -> Any:
    """`redact` applied to every string (keys too) of JSON-like data."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_json(k): redact_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Formats the record's message once, redacted, so handlers print it as is."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(handler: logging.Handler) -> None:
    handler.addFilter(RedactingFilter())
