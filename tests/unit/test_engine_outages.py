"""The Docker event watcher records a span in which the engine did not answer and
asks for a resync once it answers again (the gap's events are lost)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import requests

from controller.adapters.docker_engine import DockerEngine


class FlakyApi:
    """events(): a stream that ends (dockerd stopping), then `refusals` connection
    errors (dockerd away), then a stream that waits until stopped."""

    def __init__(self, refusals: int, stop: threading.Event) -> None:
        self.calls = 0
        self.refusals = refusals
        self.stop = stop

    def events(self, **_: Any) -> Iterator[dict[str, Any]]:
        self.calls += 1
        if self.calls == 1:
            return iter([])
        if self.calls <= 1 + self.refusals:
            raise requests.exceptions.ConnectionError("connection refused")
        def wait() -> Iterator[dict[str, Any]]:
            self.stop.wait(5)
            yield from ()
        return wait()


class FakeClient:
    def __init__(self, api: FlakyApi) -> None:
        self.api = api


async def watch(refusals: int) -> tuple[DockerEngine, list[str], datetime, datetime]:
    stop = threading.Event()
    api = FlakyApi(refusals, stop)
    engine = DockerEngine(cast(Any, FakeClient(api)), instance="outage")
    engine.reconnect_seconds = 0.01
    reconnected: list[str] = []
    before = datetime.now(UTC)
    thread = engine.watch_events(asyncio.get_running_loop(), lambda *a: None, stop,
                                 on_reconnect=lambda: reconnected.append("back"))
    for _ in range(500):
        if reconnected:
            break
        await asyncio.sleep(0.01)
    after = datetime.now(UTC)
    stop.set()
    await asyncio.to_thread(thread.join, 5)
    return engine, reconnected, before, after


async def test_an_engine_that_went_away_is_an_outage_and_a_reconnect() -> None:
    engine, reconnected, before, after = await watch(refusals=3)
    assert reconnected == ["back"]
    ((lost, back),) = engine.outages()
    assert before <= lost < back <= after


async def test_a_stream_that_reconnects_at_once_is_no_outage_but_still_a_resync() -> None:
    engine, reconnected, _, _ = await watch(refusals=0)
    assert reconnected == ["back"] and engine.outages() == ()
