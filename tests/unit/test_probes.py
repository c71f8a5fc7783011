"""The probe runner against real sockets on 127.0.0.1 (and an exec callable)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiohttp import web

from controller.core.model import Probe
from controller.core.observed import ObservedContainer, ProbeResults
from controller.drivers.probes import Prober
from tests.unit.helpers import minimax

FAST = {"periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Health:
    """An HTTP server whose /healthz answers `status`."""

    def __init__(self) -> None:
        self.status = 200
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=self.status, text="ok")


@pytest.fixture
async def health() -> AsyncIterator[tuple[Health, int]]:
    state = Health()
    app = web.Application()
    app.router.add_get("/healthz", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield state, port
    await runner.cleanup()


async def no_exec(container: str, command: Sequence[str], seconds: float
                  ) -> tuple[int | None, str]:
    raise AssertionError("no exec probe here")


def probe(**fields: Any) -> Probe:
    return Probe.model_validate({**FAST, **fields})


def workspace(**spec: Any) -> Any:
    return minimax(agent={"protocol": "none"}, **spec)


def running(cid: str = "c1", ip: str | None = "127.0.0.1") -> ObservedContainer:
    return ObservedContainer(id=cid, name=f"wsctl-x-{cid}", workspace_id="default.alice",
                             state="running", config_hash="h", token_generation=1,
                             ip_address=ip)


async def until(prober: Prober, ws: Any, c: ObservedContainer, check: Any,
                seconds: float = 8.0) -> ProbeResults:
    async with asyncio.timeout(seconds):
        while True:
            results = prober.observe(ws, c)
            assert results is not None
            if check(results):
                return results
            await asyncio.sleep(0.05)


async def test_http_probe_turns_ready_then_failed_naming_the_probe_and_wakes_the_reconcile(
        health: tuple[Health, int]) -> None:
    state, port = health
    woken: list[str] = []
    prober = Prober(no_exec, woken.append)
    ws = workspace(readinessProbe={"httpGet": {"path": "/healthz", "port": port}, **FAST})
    try:
        ready = await until(prober, ws, running(), lambda r: r.ready is True)
        assert ready.ever_ready and woken == ["default.alice"]
        state.status = 503
        failed = await until(prober, ws, running(), lambda r: r.ready is False)
        assert failed.ready_detail == (f"httpGet :{port}/healthz failed 2 times in a row: "
                                       "HTTP 503")
        assert woken == ["default.alice"] * 2
        assert state.hits >= 3
    finally:
        await prober.close()


async def test_tcp_probe_fails_on_a_closed_port_and_succeeds_on_an_open_one(
        health: tuple[Health, int]) -> None:
    _, port = health
    prober = Prober(no_exec, lambda _: None)
    ok, detail = await prober.check(probe(tcpSocket={"port": port}), "c1", "127.0.0.1")
    assert (ok, detail) == (True, "connected")
    ok, detail = await prober.check(probe(tcpSocket={"port": free_port()}), "c1", "127.0.0.1")
    assert not ok and "refused" in detail
    ok, detail = await prober.check(probe(httpGet={"port": free_port()}), "c1", "127.0.0.1")
    assert not ok and "refused" in detail
    ok, detail = await prober.check(probe(httpGet={"port": port}), "c1", None)
    assert not ok and "no address" in detail
    await prober.close()


async def test_a_probe_that_hangs_fails_by_its_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    prober = Prober(no_exec, lambda _: None)
    try:
        ok, detail = await prober.check(
            probe(httpGet={"port": listener.getsockname()[1]}), "c1", "127.0.0.1")
        assert (ok, detail) == (False, "timed out after 1s")
    finally:
        listener.close()
        await prober.close()


async def test_exec_probe_liveness_fails_after_the_threshold() -> None:
    calls: list[tuple[str, tuple[str, ...]]] = []
    code = 0

    async def exec_probe(container: str, command: Sequence[str], seconds: float
                         ) -> tuple[int | None, str]:
        calls.append((container, tuple(command)))
        return code, "" if code == 0 else "no /tmp/ok"

    woken: list[str] = []
    prober = Prober(exec_probe, woken.append)
    ws = workspace(livenessProbe={"exec": {"command": ["test", "-f", "/tmp/ok"]}, **FAST})
    try:
        first = prober.observe(ws, running())
        assert first is not None and first.live_failed is None
        await until(prober, ws, running(), lambda r: len(calls) >= 1)
        code = 1
        dead = await until(prober, ws, running(), lambda r: r.live_failed is not None)
        assert dead.live_failed == ("exec test -f /tmp/ok failed 2 times in a row: "
                                    "exit code 1: no /tmp/ok")
        assert calls[0] == ("c1", ("test", "-f", "/tmp/ok"))
        assert woken == ["default.alice"]
    finally:
        await prober.close()


async def test_a_new_container_starts_over_and_forget_stops_the_probes(
        health: tuple[Health, int]) -> None:
    _, port = health
    prober = Prober(no_exec, lambda _: None)
    ws = workspace(readinessProbe={"httpGet": {"path": "/healthz", "port": port}, **FAST})
    try:
        await until(prober, ws, running("c1"), lambda r: r.ready is True)
        fresh = prober.observe(ws, running("c2"))
        assert fresh == ProbeResults("c2")
        assert prober.tracked == 1
        prober.forget("default.alice")
        assert prober.tracked == 0
        # A wsctl-protocol workspace is never probed.
        assert prober.observe(minimax(), running("c3")) is None and prober.tracked == 0
    finally:
        await prober.close()


async def test_the_probed_workspaces_are_bounded(health: tuple[Health, int]) -> None:
    _, port = health
    prober = Prober(no_exec, lambda _: None, max_tracked=2)
    spec: dict[str, Any] = {"readinessProbe": {"tcpSocket": {"port": port}, **FAST}}
    try:
        for name in ("a", "b", "c"):
            ws = minimax(agent={"protocol": "none"}, **spec).model_copy(
                update={"metadata": minimax().metadata.model_copy(update={"name": name})})
            results = prober.observe(ws, running(name))
            assert (results is None) == (name == "c")
        assert prober.tracked == 2
    finally:
        await prober.close()
    assert prober.tracked == 0
