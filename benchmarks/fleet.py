"""Benchmark environment: the workspace network (isolated, as `wsctl run` wants it) and
its `-open` companion, the fake LLM, a controller process, and a Docker event listener
that timestamps container starts and deaths.

Where the fake LLM is, and why. The workspace network is `internal`, and `wsctl run`
fences its bridge off the host's INPUT chain but for the registry and egress proxy
ports: no container on it reaches a server on the host, so the fake LLM cannot listen
on that network's gateway for the agents to call directly any more. It listens on the
gateway of `<network>-open` instead (the ordinary bridge an `egress: open` workspace
joins as well, made here before the controller would), reachable only from containers
that joined that network.

Only one benchmark has agents call the LLM: wake-to-answer (the agent answers an A2A
message with the fake LLM's reply). Its workspace is `egress: open` with `llm.access:
direct` (the raw docker-py floor it is compared with has no gateway to call), and the
floor's container is built from the same spec: the same two networks, the same env.
Every other fleet workspace keeps the default `egress: none` (one network, the
isolated one) and never calls the LLM (`access: direct` with the same `baseURL`, so
its env is what the raw docker-py and docker-compose containers built from the same
spec get). So each baseline runs the same containers as wsctl, on the same networks,
nothing published (wsctl publishes no port: the controller dials the container's
address on the workspace network, and so do the baselines), and what a ratio shows is
the controller's work, not a difference of network set-up. The gateway's own cost is
measured in benchmarks/gateway.py, the egress proxy's in benchmarks/egress.py."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound

from controller.adapters.docker_engine import (
    ensure_network,
    ensure_open_network,
    network_bridge,
)
from controller.adapters.host_firewall import FirewallError, HostFirewall
from controller.core.containerspec import LABEL_MANAGED_BY
from controller.testing.harness import (
    REPO,
    ControllerProcess,
    FakeLLMThread,
    new_dir,
    remove_dir,
)

KEY = "sk-bench-not-a-secret"
MANAGED_BY = "wsctl-bench"
"""The managed-by label of the workspace network the benchmark makes."""


@dataclass
class DockerEvents:
    """Container events of one label, with Docker's own nanosecond timestamps."""

    client: docker.DockerClient
    label: str
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    _stream: Any = None
    _thread: threading.Thread | None = None

    def start(self) -> DockerEvents:
        self._stream = self.client.api.events(decode=True, filters={
            "type": "container", "label": self.label, "event": ["start", "die", "create"]})

        def pump() -> None:
            try:
                for event in self._stream:
                    self.events.put(event)
            except Exception:  # the stream is closed at stop()
                return

        self._thread = threading.Thread(target=pump, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def drain(self) -> None:
        while not self.events.empty():
            self.events.get_nowait()

    def wait(self, action: str, count: int, timeout: float,
             exclude: set[str] | None = None) -> list[dict[str, Any]]:
        """The next `count` events of `action` (skipping container ids in `exclude`)."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"saw {len(found)}/{count} {action} events in {timeout:.0f}s")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event.get("Action") == action and event.get("id") not in (exclude or set()):
                found.append(event)
        return found


@dataclass
class Fleet:
    client: docker.DockerClient
    network: str
    """The workspace network: internal, no inter-container traffic (`ensure_network`)."""
    gateway: str
    """Its gateway: where the controller's registry (and LLM gateway) listens; the
    agents' host.docker.internal."""
    llm: FakeLLMThread
    """The fake LLM, on `open_gateway`: reached only from `<network>-open`."""
    open_gateway: str
    image: str = "wsctl/agent:latest"

    @property
    def open_network(self) -> str:
        """The ordinary bridge an `egress: open` workspace joins as well (wsctl's name)."""
        return f"{self.network}-open"

    @property
    def llm_url(self) -> str:
        return f"http://{self.open_gateway}:{self.llm.port}"

    def workspace(self, name: str, *, calls_llm: bool = False) -> dict[str, Any]:
        """A fleet workspace: `access: direct`, as the raw docker-py baseline's containers
        must be (it has no gateway to call); the gateway's own cost is measured in
        benchmarks/gateway.py.

        `calls_llm`: its agent will answer A2A messages, so it must reach the fake LLM:
        `egress: open` (it joins `<network>-open` too, where the fake LLM listens).
        Otherwise the default `egress: none`, and no `egress` key at all in the
        manifest. The baselines build their containers from the same spec
        (`benchmarks.bench.specs_for`), so they join the same networks."""
        spec: dict[str, Any] = {
            "model": "bench", "resources": {"memory": "128Mi", "cpus": "0.25"},
            "llm": {"provider": "minimax", "access": "direct", "baseURL": self.llm_url,
                    "apiKey": {"secretRef": {"name": "bench", "key": "api-key"}}}}
        if calls_llm:
            spec["egress"] = {"mode": "open"}
        return {"apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace",
                "metadata": {"name": name}, "spec": spec}

    @contextmanager
    def controller(self, instance: str, *flags: str,
                   repo: Path | None = None) -> Iterator[ControllerProcess]:
        """A controller process; `repo`: run that checkout's controller instead of this one."""
        data_dir = new_dir("wsctl-bench-")
        proc = ControllerProcess(data_dir=data_dir, network=self.network, instance=instance,
                                 gateway=self.gateway, env={"WSCTL_SECRET_BENCH_API_KEY": KEY},
                                 flags=flags, verbose=False, repo=repo or REPO,
                                 # an older checkout (--compare) may not know --egress-port
                                 egress_port=-1 if repo not in (None, REPO) else 0)
        try:
            yield proc.start()
        finally:
            proc.stop()
            self.remove_instance(instance)
            remove_dir(data_dir)

    def remove_instance(self, instance: str) -> None:
        for c in self.client.containers.list(
                all=True, filters={"label": f"wsctl.dev/instance={instance}"}):
            c.remove(force=True)
        for v in self.client.volumes.list(filters={"name": f"wsctl-{instance}-"}):
            v.remove(force=True)


@contextmanager
def fleet_environment(client: docker.DockerClient) -> Iterator[Fleet]:
    """The workspace network as `wsctl run` wants it (internal, no inter-container
    traffic: it refuses any other), `<network>-open` beside it (made here first, as
    the fake LLM listens on its gateway; `wsctl run` finds it made), the fake LLM.
    At the end every container on either network goes, then both networks (the open
    one may be gone already: benchmarks/egress.py removes it), then the host INPUT
    fence `wsctl run` left on the workspace network's bridge (a later `wsctl run`
    would prune it too, the bridge being gone)."""
    name = f"wsctl-bench-{os.getpid()}"
    open_name = f"{name}-open"
    networks = [name, open_name]
    llm: FakeLLMThread | None = None
    bridge: str | None = None
    try:
        gateway = ensure_network(client.api, name, {LABEL_MANAGED_BY: MANAGED_BY})
        bridge = network_bridge(client.api, name)
        ensure_open_network(client.api, open_name)
        open_gateway = _gateway(client, open_name)
        llm = FakeLLMThread(open_gateway, KEY).start()
        yield Fleet(client, name, gateway, llm, open_gateway)
    finally:
        if llm is not None:
            llm.stop()
        for network in networks:
            for c in client.containers.list(all=True, filters={"network": network}):
                with contextlib.suppress(NotFound):
                    c.remove(force=True)
        for network in networks:
            with contextlib.suppress(NotFound, APIError):
                client.api.remove_network(network)
        if bridge is not None:
            _remove_fence(bridge)


def _gateway(client: docker.DockerClient, network: str) -> str:
    for config in (client.api.inspect_network(network).get("IPAM") or {}).get("Config") or []:
        if config.get("Gateway"):
            return str(config["Gateway"])
    raise RuntimeError(f"network {network} has no IPv4 gateway")


def _remove_fence(bridge: str) -> None:
    """The INPUT chain of this bridge only (its network removed), none other."""
    gone = not Path("/sys/class/net", bridge).exists()
    if gone:
        with contextlib.suppress(FirewallError):
            HostFirewall(bridge).prune(exists=lambda other: other != bridge)


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds used, RSS bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return cpu, rss


def _cpu_seconds(stat: str) -> tuple[int, float]:
    """(parent pid, CPU seconds) from a /proc/PID/stat line."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_group(postmaster_pid: int | None = None) -> dict[str, float]:
    """CPU seconds used so far by the Docker daemons (dockerd, containerd, shims,
    docker-proxy) and, given its postmaster, one PostgreSQL server and its backends.
    On a shared machine the daemons' figure includes other users' work."""
    daemons = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2",
               "docker-proxy", "runc")
    out = {"docker_daemons": 0.0, "postgres": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            ppid, cpu = _cpu_seconds((entry / "stat").read_text())
        except OSError:
            continue
        if comm in daemons:
            out["docker_daemons"] += cpu
        elif postmaster_pid is not None and postmaster_pid in (int(entry.name), ppid):
            out["postgres"] += cpu
    return out


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
