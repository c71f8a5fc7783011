"""Watching workspaces: `GET /api/v1/workspaces?watch=true` (issue 17).

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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
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


async def serve_watch(request: web.Request, hub: WatchHub, listing: Lister,
                      covers: Covers = _everything,
                      bookmark_seconds: float = BOOKMARK_SECONDS) -> web.StreamResponse:
    with hub.watching(covers) as wake:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")

        known: dict[str, dict[str, Any]] = {}

        async def relist() -> None:
            wake.clear()  # before the look: a change during it wakes the next one
            current = {_id(o): o for o in await listing()}
            for key, obj in current.items():
                if known.get(key) != obj:
                    await send({"type": "ADDED" if key not in known else "MODIFIED",
                                "object": obj})
            for key in set(known) - set(current):
                await send({"type": "DELETED", "object": known[key]})
            known.clear()
            known.update(current)

        await relist()
        await send({"type": "BOOKMARK"})  # the initial ADDED events end here
        while True:
            try:
                await asyncio.wait_for(wake.wait(), bookmark_seconds)
            except TimeoutError:
                await send({"type": "BOOKMARK"})
                continue
            await relist()


def _id(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}.{meta.get('name')}"
