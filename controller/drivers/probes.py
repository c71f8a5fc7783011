"""The controller's probes of workspaces whose image speaks no wsctl protocol.

A workspace with `spec.agent.protocol: none` is healthy by its probes, as a Pod is:
`spec.readinessProbe` and `spec.livenessProbe`, each `httpGet`, `tcpSocket` or `exec`,
run every `periodSeconds` against the workspace's current container. HTTP and TCP
dial the container's address on the workspace network (no port is published: the
network is internal, and the controller reaches it as the A2A proxy does); exec runs
the command through Docker as the agent's user.

One task per probed container. A change of verdict (ready or not; liveness failed
or not) wakes that workspace's reconcile, which reads the results through
`observe()` (the reconcile port `Probes`) and plans from them. Results are kept for
one container per workspace (a new container, spec or address restarts the probes)
and for at most `max_tracked` workspaces; a workspace is forgotten when it is
deleted or stops needing probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from controller.core.model import Probe, Workspace
from controller.core.observed import ObservedContainer, ProbeResults

log = logging.getLogger("wsctl.probes")

ExecProbe = Callable[[str, Sequence[str], float], Awaitable[tuple[int | None, str]]]
"""(container id, command, timeout seconds) -> (exit code or None, the output's last
line or why it could not run); raises TimeoutError on timeout."""

MAX_TRACKED = 4096


@dataclass
class _Counter:
    """Failures in a row of one probe, and what the last one said."""

    failures: int = 0
    detail: str = ""


@dataclass
class _Tracked:
    container_id: str
    address: str | None
    readiness: Probe | None
    liveness: Probe | None
    results: ProbeResults
    task: asyncio.Task[None] | None = None
    counters: dict[str, _Counter] = field(default_factory=dict)

    def same(self, container: ObservedContainer, readiness: Probe | None,
             liveness: Probe | None) -> bool:
        return (self.container_id, self.address, self.readiness, self.liveness) == (
            container.id, container.ip_address, readiness, liveness)


class Prober:
    """Runs the probes of `protocol: none` workspaces; see the module's docstring."""

    def __init__(self, exec_probe: ExecProbe, on_change: Callable[[str], None], *,
                 max_tracked: int = MAX_TRACKED,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._exec = exec_probe
        self._on_change = on_change
        self._max_tracked = max_tracked
        self._monotonic = monotonic
        self._tracked: dict[str, _Tracked] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def tracked(self) -> int:
        return len(self._tracked)

    def observe(self, ws: Workspace, container: ObservedContainer | None
                ) -> ProbeResults | None:
        """The results for `container` (the workspace's current one), starting its
        probes when they are not running yet; None when it has none to run."""
        workspace_id = ws.key.id
        spec = ws.spec
        readiness, liveness = spec.readiness_probe, spec.liveness_probe
        if spec.agent.protocol != "none" or container is None or not container.running \
                or (readiness is None and liveness is None):
            self.forget(workspace_id)
            return None
        tracked = self._tracked.get(workspace_id)
        if tracked is None or not tracked.same(container, readiness, liveness):
            self.forget(workspace_id)
            if len(self._tracked) >= self._max_tracked:
                log.warning("%s: not probed: %d workspaces are probed already", ws.key,
                            self._max_tracked)
                return None
            tracked = _Tracked(container.id, container.ip_address, readiness, liveness,
                               ProbeResults(container.id))
            self._tracked[workspace_id] = tracked
            tracked.task = asyncio.get_running_loop().create_task(
                self._run(workspace_id, tracked), name=f"probes {workspace_id}")
        return tracked.results

    def forget(self, workspace_id: str) -> None:
        tracked = self._tracked.pop(workspace_id, None)
        if tracked is not None and tracked.task is not None:
            tracked.task.cancel()

    async def close(self) -> None:
        tasks = [t.task for t in self._tracked.values() if t.task is not None]
        self._tracked.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------ running

    async def _run(self, workspace_id: str, tracked: _Tracked) -> None:
        loops = [self._loop(workspace_id, tracked, kind, probe)
                 for kind, probe in (("readiness", tracked.readiness),
                                     ("liveness", tracked.liveness)) if probe is not None]
        try:
            await asyncio.gather(*loops)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not end the controller
            log.exception("%s: the probes stopped", workspace_id)

    async def _loop(self, workspace_id: str, tracked: _Tracked, kind: str,
                    probe: Probe) -> None:
        counter = tracked.counters.setdefault(kind, _Counter())
        await asyncio.sleep(probe.initial_delay_seconds)
        while True:
            began = self._monotonic()
            ok, detail = await self.check(probe, tracked.container_id, tracked.address)
            before = tracked.results
            tracked.results = _judged(before, kind, probe, counter, ok, detail)
            if self._tracked.get(workspace_id) is not tracked:
                return  # forgotten while it ran
            if _verdict(tracked.results) != _verdict(before):
                log.info("%s: %sProbe %s", workspace_id, kind,
                         "succeeded" if ok else f"failed: {counter.detail}")
                self._on_change(workspace_id)
            spent = self._monotonic() - began
            await asyncio.sleep(max(probe.period_seconds - spent, 0.0))

    async def check(self, probe: Probe, container_id: str, address: str | None
                    ) -> tuple[bool, str]:
        """Run `probe` once: (succeeded, what it saw)."""
        timeout = float(probe.timeout_seconds)
        try:
            if probe.exec is not None:
                code, output = await self._exec(container_id, probe.exec.command, timeout)
                if code == 0:
                    return True, "exit code 0"
                return False, (f"exit code {code}" if code is not None else "could not run") \
                    + (f": {output}" if output else "")
            if address is None:
                return False, "the container has no address on the workspace network"
            if probe.http_get is not None:
                return await self._http(address, probe.http_get.port, probe.http_get.path,
                                        timeout)
            assert probe.tcp_socket is not None
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(address, probe.tcp_socket.port), timeout)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True, "connected"
        except TimeoutError:
            return False, f"timed out after {probe.timeout_seconds}s"
        except OSError as exc:
            return False, _why(exc)

    async def _http(self, address: str, port: int, path: str, seconds: float
                    ) -> tuple[bool, str]:
        if self._session is None:
            # No pooled connections: each probe is a fresh dial, as the kubelet's.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True), trust_env=False)
        try:
            async with self._session.get(
                    f"http://{address}:{port}{path}", allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=seconds),
                    headers={"User-Agent": "wsctl-probe/1"}) as response:
                await response.read()
                if 200 <= response.status < 400:
                    return True, f"HTTP {response.status}"
                return False, f"HTTP {response.status}"
        except aiohttp.ClientConnectorError as exc:
            return False, _why(exc.os_error)
        except aiohttp.ClientError as exc:
            return False, " ".join(str(exc).split())[:200] or type(exc).__name__


def _why(exc: OSError) -> str:
    reason = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
    return " ".join(reason.split()).lower()[:200]


def _verdict(results: ProbeResults) -> tuple[bool | None, bool]:
    return results.ready, results.live_failed is not None


def _judged(results: ProbeResults, kind: str, probe: Probe, counter: _Counter,
            ok: bool, detail: str) -> ProbeResults:
    """The results after one probe run (Kubernetes' rules: one success is enough;
    failureThreshold failures in a row are a failure)."""
    if ok:
        counter.failures, counter.detail = 0, ""
        if kind == "readiness":
            return dataclasses.replace(results, ready=True, ever_ready=True, ready_detail="")
        return dataclasses.replace(results, live_failed=None)
    counter.failures += 1
    counter.detail = detail
    if kind == "readiness":
        failed = counter.failures >= probe.failure_threshold
        what = (f"{probe.shown()} failed {probe.failure_threshold} times in a row: {detail}"
                if failed else f"{probe.shown()}: {detail}")
        return dataclasses.replace(results, ready=False if failed else results.ready,
                                   ready_detail=what)
    if counter.failures >= probe.failure_threshold:
        return dataclasses.replace(
            results, live_failed=f"{probe.shown()} failed {probe.failure_threshold} times "
                                 f"in a row: {detail}")
    return results
