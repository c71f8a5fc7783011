"""A second line of defence: known secret values never reach a log line.

wsctl never logs secret values on purpose; this filter catches accidents. Code
that handles a secret (projection, token minting, the admin token) calls
`remember(value)`; a logging filter on the controller's handlers replaces every
remembered value in formatted messages with `<redacted:prefix-of-its-hash>`.
"""

from __future__ import annotations

import hashlib
import logging
import threading

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
