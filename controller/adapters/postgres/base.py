"""What every part of the PostgreSQL store shares.

The errors callers react to, the translation of connection-level failures
into `StoreUnavailableError` (`_translated`), the pool's connection setup
(JSON codecs, query counting, a cheap reset) and the cleaning of text and
JSON into what PostgreSQL accepts.
"""

from __future__ import annotations

import functools
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import asyncpg

from controller.core import origin
from controller.core.errors import StoreError, StoreUnavailableError

# One logger for the whole package, named as when the store was one module.
log = logging.getLogger("controller.adapters.postgres")

if TYPE_CHECKING:  # asyncpg's classes are generic only in its stubs
    from typing import TypeAlias

    _Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    _Conn: TypeAlias = asyncpg.Connection[asyncpg.Record]
    _AnyConn: TypeAlias = _Conn | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]


# ------------------------------------------------------------------ errors


# StoreError and StoreUnavailableError live in controller.core.errors (the API layer catches
# them without importing this adapter); the package re-exports them.


class ConflictError(StoreError):
    """A uniqueness rule was violated (e.g. a second live token for a workspace)."""


class MigrationError(StoreError):
    """The database schema does not match this wsctl's migrations."""


# Errors meaning "the database is not reachable right now", not "the query is wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    asyncpg.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
    # A pooled connection the server closed while it shut down, caught between two
    # protocol states ("cannot switch to state 12; another operation is in progress"):
    # seen in chaos runs during a PostgreSQL restart, and answered 500 until mapped here.
    asyncpg.InternalClientError,
)

# ... and what opening a pool raises when the server is not one we can use.
CANNOT_CONNECT: tuple[type[BaseException], ...] = (
    *_UNAVAILABLE, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def describe_dsn(dsn: str) -> str:
    """`dsn` without its password (and query), for messages."""
    try:
        parts = urllib.parse.urlsplit(dsn)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable DSN>"
    if not parts.scheme:
        return "<unparsable DSN>"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{parts.hostname or 'localhost'}{port}{parts.path}"


def _translated(method: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
    """Raise connection-level failures as `StoreUnavailableError`."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(*args, **kwargs)
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(
                f"database unavailable ({type(exc).__name__}: {exc})") from exc

    return wrapper


# ------------------------------------------------------------------ connections


QUERY_COUNT: dict[str, int] = dict.fromkeys(origin.ORIGINS, 0)
"""Statements sent by every Store of this process, by the origin of the work that sent
them (`controller.core.origin`), for /metrics and the benchmarks. Process-wide: both
composition roots export it."""


def _count_query(_record: object) -> None:
    # asyncpg calls query loggers through loop.call_soon, which runs them in a copy of
    # the context of the task that sent the statement: `current()` is that task's origin.
    where = origin.current()
    QUERY_COUNT[where] = QUERY_COUNT.get(where, 0) + 1


async def _reset_connection(conn: _Conn) -> None:
    """Cheaper than asyncpg's default reset (a round trip on every release).

    Pool connections hold no session state: advisory locks are transaction-
    scoped and LISTEN uses a dedicated connection. Only an open transaction
    (a caller that failed mid-way) needs undoing.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def _init_connection(conn: _Conn) -> None:
    conn.add_query_logger(_count_query)
    for type_name in ("jsonb", "json"):
        await conn.set_type_codec(
            type_name,
            schema="pg_catalog",
            encoder=_json_dumps,
            decoder=json.loads,
        )


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


# ------------------------------------------------------------------ cleaning


def clean_text(value: str) -> str:
    """Text PostgreSQL accepts: no NUL characters, no lone surrogates."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def clean_json(value: Any) -> Any:
    """A JSON-ready copy of `value` that jsonb accepts (see `clean_text`)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return clean_text(str(value))


def _clean_opt(value: str | None) -> str | None:
    return None if value is None else clean_text(value)
