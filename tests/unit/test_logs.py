"""A malformed request is one WARNING line in the controller's log, not an ERROR
with a traceback; other records pass untouched."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import BadHttpMessage

from controller.app.logs import BadRequestFilter


def record(exc: BaseException | None, level: int = logging.ERROR) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("aiohttp.server", level, __file__, 1, "Error handling request "
                             "from %s", ("127.0.0.1",), exc_info)


def test_a_request_the_parser_refused_is_one_warning_line() -> None:
    rec = record(BadHttpMessage("Invalid header value char:\n\n  b'X: \\x00'\n"))
    assert BadRequestFilter().filter(rec)
    assert (rec.levelno, rec.levelname, rec.exc_info) == (logging.WARNING, "WARNING", None)
    assert rec.getMessage() == ("Error handling request from 127.0.0.1: Invalid header value "
                                "char: b'X: \\x00' (answered 400)")
    assert "\n" not in logging.Formatter().format(rec)


def test_other_errors_keep_their_level_and_traceback() -> None:
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        rec = record(exc)
    assert BadRequestFilter().filter(rec)
    assert rec.levelno == logging.ERROR and rec.exc_info is not None
    plain = record(None, logging.INFO)
    assert BadRequestFilter().filter(plain) and plain.levelno == logging.INFO
