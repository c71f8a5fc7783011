"""The log redaction filter: remembered secret values never reach a handler's output."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from controller.core import redact


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    redact.install(handler)
    log = logging.getLogger("wsctl.test.redact")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log, out
    log.removeHandler(handler)
    redact.forget_all()


def test_remembered_values_are_redacted_in_messages_args_and_tracebacks(
        logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logger
    redact.remember("sk-live-abcdef123456", "tok-9f8e7d6c5b4a")
    log.info("calling with key %s and token %s", "sk-live-abcdef123456", "tok-9f8e7d6c5b4a")
    try:
        raise RuntimeError("upstream said: bad key sk-live-abcdef123456")
    except RuntimeError:
        log.exception("failed")
    text = out.getvalue()
    assert "sk-live-abcdef123456" not in text and "tok-9f8e7d6c5b4a" not in text
    assert text.count("<redacted:") >= 3  # message, source line and exception text
    assert "RuntimeError" in text  # the traceback itself is kept


def test_short_values_and_unrelated_text_are_left_alone(
        logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logger
    redact.remember("abc", "")
    log.info("abc stays %s", "abc")
    assert out.getvalue().strip() == "INFO abc stays abc"


def test_redact_json_reaches_every_string_and_key() -> None:
    redact.remember("sk-live-abcdef123456")
    try:
        data = {"name": "x", "sk-live-abcdef123456": [1, {"deep": "a sk-live-abcdef123456 b"}],
                "n": 3, "ok": True, "none": None}
        out = redact.redact_json(data)
        assert "sk-live-abcdef123456" not in repr(out)
        assert out["name"] == "x" and out["n"] == 3 and out["ok"] is True and out["none"] is None
        assert out[next(k for k in out if k.startswith("<redacted:"))][1]["deep"].startswith("a <")
    finally:
        redact.forget_all()


def test_minted_tokens_are_bounded_but_secrets_are_never_evicted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact, "MAX_TOKENS", 3)
    try:
        redact.remember("sk-live-abcdef123456")
        for i in range(5):
            redact.remember_token(f"token-number-{i}")
        out = redact.redact("sk-live-abcdef123456 token-number-0 token-number-1 "
                            "token-number-2 token-number-4")
        assert "sk-live-abcdef123456" not in out  # a secret outlives any number of tokens
        assert "token-number-0" in out and "token-number-1" in out  # the oldest went
        assert "token-number-2" not in out and "token-number-4" not in out
        redact.remember_token("token-number-2")  # seen again: newest, kept
        for i in range(5, 7):
            redact.remember_token(f"token-number-{i}")
        assert "token-number-2" not in redact.redact("token-number-2")
    finally:
        redact.forget_all()


def test_a_token_remembered_again_keeps_the_sorted_cache() -> None:
    """The A2A proxy remembers its per-container credential on every message: a value
    already known must not make the next redaction sort every value again."""
    try:
        redact.remember_token("a2a-credential-0123456789")
        before = redact._values()
        redact.remember_token("a2a-credential-0123456789")
        assert redact._values() is before
        redact.remember_token("another-token-0123456789")  # news: a new cache
        assert redact._values() is not before
        assert "another-token-0123456789" not in redact.redact("another-token-0123456789")
    finally:
        redact.forget_all()
