"""Watching workspaces and events: `GET /api/v1/workspaces?watch=true` and
`GET /api/v1/events?watch=true` (issue 17).

The controller tells a `WatchHub` that a workspace changed: its status was written
(the reconcile loop), or its desired state changed (the store's notification:
apply, delete, purge; from any process). A watcher holds one flag, not a queue: it
lists what it watches again (one statement: the named workspace, or the
namespace's) and sends what differs from what it sent before. A burst of changes
is one look, a slow reader holds nothing but that flag, and no change between two
looks is lost (the look compares whole objects).

The answer is NDJSON, one event a line, as Kubernetes watches are: first `ADDED`
for every workspace that matches (namespace, name) and a `BOOKMARK` (the initial
list is complete), then `ADDED` / `MODIFIED` /
`DELETED` as they happen, and `{"type": "BOOKMARK"}` every `BOOKMARK_SECONDS` so a
client knows the stream is alive. At most `MAX_WATCHERS` at once (more: 429).

An events watch is the same stream over events (`EventCursor`): the newest events,
a `BOOKMARK`, then each new event (`ADDED`) or repeat (`MODIFIED`, its count and
time moved) as the store records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

MAX_WATCHERS = 64
BOOKMARK_SECONDS = 15.0


Covers = Callable[[str], bool]
"""Whether a watch is about the workspace of that id (its namespace, its name)."""


def _everything(workspace_id: str) -> bool:
    return True


class WatchHub:
    def __init__(self) -> None:
        self.watchers: dict[asyncio.Event, Covers] = {}

    def changed(self, workspace_id: str | None = None) -> None:
        """A workspace changed (None: any may have: a reconnect of the notification).
        Only the watches it is about look again."""
        for wake, covers in self.watchers.items():
            if workspace_id is None or covers(workspace_id):
                wake.set()

    @contextlib.contextmanager
    def watching(self, covers: Covers = _everything) -> Iterator[asyncio.Event]:
        if len(self.watchers) >= MAX_WATCHERS:
            raise web.HTTPTooManyRequests(
                text=json.dumps({"error": f"at most {MAX_WATCHERS} watches at once"}),
                content_type="application/json")
        wake = asyncio.Event()
        self.watchers[wake] = covers
        try:
            yield wake
        finally:
            del self.watchers[wake]


Lister = Callable[[], Awaitable[list[dict[str, Any]]]]
"""The wire form of every workspace the watch covers, as GET would show it."""
Look = Callable[[], Awaitable[list[dict[str, Any]]]]
"""What happened since the last look, as the stream's events (`{"type", "object"}`)."""


async def serve_stream(request: web.Request, hub: WatchHub, look: Look,
                       covers: Covers = _everything,
                       bookmark_seconds: float = BOOKMARK_SECONDS) -> web.StreamResponse:
    """NDJSON: the first look's events, a `BOOKMARK`, then a look's events each time the
    hub says something the watch covers changed, and a `BOOKMARK` every
    `bookmark_seconds` of quiet."""
    with hub.watching(covers) as wake:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(events: list[dict[str, Any]]) -> None:
            if events:
                await response.write(b"".join(json.dumps(e, separators=(",", ":")).encode()
                                              + b"\n" for e in events))

        async def looked() -> list[dict[str, Any]]:
            wake.clear()  # before the look: a change during it wakes the next one
            return await look()

        await send([*await looked(), {"type": "BOOKMARK"}])  # the initial list ends here
        while True:
            try:
                await asyncio.wait_for(wake.wait(), bookmark_seconds)
            except TimeoutError:
                await send([{"type": "BOOKMARK"}])
                continue
            await send(await looked())


async def serve_watch(request: web.Request, hub: WatchHub, listing: Lister,
                      covers: Covers = _everything,
                      bookmark_seconds: float = BOOKMARK_SECONDS) -> web.StreamResponse:
    """A watch of workspaces: each look lists them again and sends what differs."""
    known: dict[str, dict[str, Any]] = {}

    async def relist() -> list[dict[str, Any]]:
        current = {_id(o): o for o in await listing()}
        events = [{"type": "ADDED" if key not in known else "MODIFIED", "object": obj}
                  for key, obj in current.items() if known.get(key) != obj]
        events += [{"type": "DELETED", "object": known[key]}
                   for key in set(known) - set(current)]
        known.clear()
        known.update(current)
        return events

    return await serve_stream(request, hub, relist, covers, bookmark_seconds)


def _id(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}.{meta.get('name')}"


class EventCursor:
    """Where an events watch is: the latest event time it sent, and the (count, time)
    of each event it sent in the last `OVERLAP`. A look asks for events later than
    that time less the overlap, so an event committed a moment after a later one is
    not lost, and sends only new ones and repeats (a higher count: MODIFIED).
    Bounded: only the overlap's events are remembered."""

    OVERLAP = timedelta(seconds=5)

    def __init__(self) -> None:
        self.latest: datetime | None = None
        self.sent: dict[int, tuple[int, datetime]] = {}

    @property
    def after(self) -> datetime | None:
        return None if self.latest is None else self.latest - self.OVERLAP

    def fresh(self, events: list[Any]) -> list[tuple[str, Any]]:
        """("ADDED" | "MODIFIED", event) of those not sent yet, in order. `events` have
        `id`, `count` and `at` (oldest first, as `Store.recent_events`)."""
        out = []
        for e in events:
            before = self.sent.get(e.id)
            if before is None or before[0] != e.count:
                out.append(("ADDED" if before is None else "MODIFIED", e))
            self.sent[e.id] = (e.count, e.at)
            self.latest = e.at if self.latest is None else max(self.latest, e.at)
        horizon = self.after
        if horizon is not None:
            self.sent = {i: v for i, v in self.sent.items() if v[1] > horizon}
        return out
