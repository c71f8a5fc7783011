"""A second line of defence: known secret values never reach an output.

wsctl never logs or stores secret values on purpose; this catches accidents and
text from elsewhere (an agent's heartbeat detail, a container's last log lines).
Code that handles a secret (projection, token minting, the admin token) calls
`remember(value)`; `redact` replaces every remembered value with
`<redacted:prefix-of-its-hash>`. It runs on every controller log line (a logging
filter), on what is stored for others to read (events, diagnostics log tails,
heartbeat details, register failures, the failure message in status) and on the
admin API's error messages and container logs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

MIN_LENGTH = 6  # shorter values would redact ordinary words

_lock = threading.Lock()
_values: set[str] = set()


def remember(*values: str) -> None:
    with _lock:
        _values.update(v for v in values if len(v) >= MIN_LENGTH)


def forget_all() -> None:
    with _lock:
        _values.clear()


def redact(text: str) -> str:
    with _lock:
        values = sorted(_values, key=len, reverse=True)
    for value in values:
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
