"""LISTEN/NOTIFY: desired-state changes delivered as they are committed.

`WorkspaceListener` holds a dedicated connection listening on
`wsctl_workspaces`, reconnects with backoff when it is lost and tells the
caller to resync then.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg

from controller.adapters.postgres.base import log
from controller.core.model import WorkspaceKey

if TYPE_CHECKING:
    from controller.adapters.postgres.base import _Conn

NOTIFY_CHANNEL = "wsctl_workspaces"

WorkspaceChangeCallback = Callable[[WorkspaceKey], None]


class WorkspaceListener:
    """LISTEN on `wsctl_workspaces` over a dedicated connection.

    `callback(key)` runs on the event loop for every desired-state change
    (keep it quick: e.g. put the key on a work queue). If the connection is
    lost (database restart), it reconnects with backoff and then calls
    `on_reconnect()`: notifications sent while disconnected are lost, so the
    caller should resync everything then. A connection that died silently
    (no FIN, e.g. a network partition to an external database) is found by a
    `SELECT 1` every `health_interval_seconds`. Malformed payloads are ignored.
    """

    def __init__(
        self,
        dsn: str,
        callback: WorkspaceChangeCallback,
        on_reconnect: Callable[[], None] | None = None,
        *,
        max_backoff_seconds: float = 5.0,
        health_interval_seconds: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._subscribers: list[tuple[WorkspaceChangeCallback, Callable[[], None] | None]] = [
            (callback, on_reconnect)]
        self._max_backoff = max_backoff_seconds
        self._health_interval = health_interval_seconds
        self._conn: _Conn | None = None
        self._lost = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, callback: WorkspaceChangeCallback,
                  on_reconnect: Callable[[], None] | None = None) -> None:
        """One more `callback` (and `on_reconnect`) on this connection: every part of a
        controller that follows changes shares one LISTEN connection. Each part
        subscribes once at start-up, so the list stays as long as the parts are."""
        self._subscribers.append((callback, on_reconnect))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @property
    def backend_pid(self) -> int | None:
        """Server pid of the listening connection (None while disconnected)."""
        return self._conn.get_server_pid() if self.connected and self._conn else None

    async def start(self) -> None:
        """Connect and LISTEN; changes committed after this returns are delivered."""
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name="wsctl-listen")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()

    async def _connect(self) -> None:
        conn: _Conn = await asyncpg.connect(self._dsn)
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._terminated)
        self._lost.clear()
        self._conn = conn

    def _notified(
        self, _conn: object, _pid: int, _channel: str, payload: object
    ) -> None:
        try:
            key = WorkspaceKey.from_id(str(payload))
        except ValueError:
            log.warning("ignoring malformed %s payload %r", NOTIFY_CHANNEL, payload)
            return
        for callback, _ in list(self._subscribers):
            try:
                callback(key)
            except Exception:
                log.exception("workspace change callback failed for %s", key)

    def _terminated(self, conn: object) -> None:
        if not self._closed and conn is self._conn:
            self._lost.set()

    async def _supervise(self) -> None:
        while not self._closed:
            try:
                await asyncio.wait_for(self._lost.wait(), self._health_interval)
            except TimeoutError:
                if await self._healthy():
                    continue
            if self._closed:
                return
            await self._reconnect()

    async def _healthy(self) -> bool:
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=min(5.0, self._health_interval))
        except Exception as exc:
            log.info("LISTEN connection failed its health check (%s)", exc)
            return False
        return True

    async def _reconnect(self) -> None:
        old, self._conn = self._conn, None
        if old is not None and not old.is_closed():
            old.terminate()
        delay = 0.05
        while not self._closed:
            try:
                await self._connect()
                break
            except Exception as exc:
                log.info("LISTEN reconnect failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
        for _, on_reconnect in list(self._subscribers):
            if on_reconnect is None or self._closed:
                continue
            try:
                on_reconnect()
            except Exception:
                log.exception("on_reconnect callback failed")
