"""The watch stream (controller/api/watch.py) and the client's parsing of `wait`."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from controller.api import watch
from controller.api.watch import EventCursor, WatchHub, serve_watch
from controller.app.cli_watch import condition_check, duration


def ws(name: str, phase: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": name},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": "True" if phase == "Online" else "False"}]}}


async def test_the_stream_lists_then_says_what_changed() -> None:
    hub = WatchHub()
    state = {"a": ws("a", "Pending"), "b": ws("b", "Online")}
    looks = 0

    async def listing() -> list[dict[str, Any]]:
        nonlocal looks
        looks += 1
        return list(state.values())

    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve_watch(request, hub, listing, bookmark_seconds=0.2)

    app = web.Application()
    app.router.add_get("/w", handler)
    async with TestServer(app) as server, aiohttp.ClientSession() as http, \
            http.get(server.make_url("/w")) as response:
        assert response.headers["Content-Type"] == "application/x-ndjson"

        async def next_event() -> dict[str, Any]:
            line = await asyncio.wait_for(response.content.readline(), 5)
            return dict(json.loads(line))

        first = [await next_event() for _ in range(3)]
        assert [(e["type"], e.get("object", {}).get("metadata", {}).get("name"))
                for e in first] == [("ADDED", "a"), ("ADDED", "b"), ("BOOKMARK", None)]
        state["a"] = ws("a", "Online")
        del state["b"]
        state["c"] = ws("c", "Pending")
        hub.changed("default.a")
        changed = [await next_event() for _ in range(3)]
        assert {(e["type"], e["object"]["metadata"]["name"]) for e in changed} == {
            ("MODIFIED", "a"), ("DELETED", "b"), ("ADDED", "c")}
        assert (await next_event())["type"] == "BOOKMARK"  # nothing changed: alive
        assert looks == 2  # a bookmark does not look again
    assert hub.watchers == {}  # the watch ended with its connection


def test_a_change_wakes_only_the_watches_it_is_about() -> None:
    hub = WatchHub()
    with hub.watching("default.a".__eq__) as one, hub.watching() as every:
        hub.changed("default.b")
        assert not one.is_set() and every.is_set()
        hub.changed("default.a")
        assert one.is_set()
        one.clear()
        hub.changed()  # a reconnect: anything may have changed
        assert one.is_set()


async def test_watches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "MAX_WATCHERS", 1)
    hub = WatchHub()
    with hub.watching(), pytest.raises(web.HTTPTooManyRequests), hub.watching():
        pass


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("2m", 120),
                                               ("1.5h", 5400), ("0", 0)])
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "-1s", "2d", "inf", "nan"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


def test_conditions() -> None:
    ready = condition_check("condition=Ready")
    assert ready(ws("a", "Online")) and not ready(ws("a", "Pending")) and not ready(None)
    assert condition_check("condition=Ready=False")(ws("a", "Pending"))
    assert condition_check("phase=Online")(ws("a", "Online"))
    assert not condition_check("phase=Online")({"metadata": {}})  # no status: Pending
    assert condition_check("delete")(None) and not condition_check("delete")(ws("a", "x"))
    for bad in ("ready", "condition=", "condition=Ready=Maybe", "phase", "delete=now"):
        with pytest.raises(argparse.ArgumentTypeError):
            condition_check(bad)


def test_an_event_cursor_sends_new_events_and_repeats_once() -> None:
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    t0 = datetime(2026, 12, 4, tzinfo=UTC)

    def event(id_: int, count: int, seconds: float) -> Any:
        return SimpleNamespace(id=id_, count=count, at=t0 + timedelta(seconds=seconds))

    cursor = EventCursor()
    assert cursor.after is None  # the first look: the newest events
    first = cursor.fresh([event(1, 1, 0), event(2, 1, 1)])
    assert [(kind, e.id) for kind, e in first] == [("ADDED", 1), ("ADDED", 2)]
    assert cursor.after == t0 + timedelta(seconds=1) - EventCursor.OVERLAP
    # the next look overlaps: what was sent is not sent again; a repeat (count up) and a
    # late commit with an earlier time than the latest are
    again = cursor.fresh([event(1, 1, 0), event(3, 1, 0.5), event(2, 2, 2)])
    assert [(kind, e.id) for kind, e in again] == [("ADDED", 3), ("MODIFIED", 2)]
    assert cursor.fresh([event(2, 2, 2)]) == []
    # only the overlap's events are remembered
    cursor.fresh([event(9, 1, 60)])
    assert set(cursor.sent) == {9}
