"""Benchmark environment: a private Docker network, the fake LLM, a controller process,
and a Docker event listener that timestamps container starts and deaths."""

from __future__ import annotations

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

from controller.testing.harness import (
    REPO,
    ControllerProcess,
    FakeLLMThread,
    new_dir,
    remove_dir,
)

KEY = "sk-bench-not-a-secret"


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
    gateway: str
    llm: FakeLLMThread
    image: str = "wsctl/agent:latest"

    def workspace(self, name: str) -> dict[str, Any]:
        """access: direct, as the raw docker-py baseline's containers must be (it has no
        gateway to call); the gateway's own cost is measured in benchmarks/gateway.py."""
        return {
            "apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace", "metadata": {"name": name},
            "spec": {"model": "bench", "resources": {"memory": "128Mi", "cpus": "0.25"},
                     "llm": {"provider": "minimax", "access": "direct",
                             "baseURL": f"http://host.docker.internal:{self.llm.port}",
                             "apiKey": {"secretRef": {"name": "bench", "key": "api-key"}}}},
        }

    @contextmanager
    def controller(self, instance: str, *flags: str,
                   repo: Path | None = None) -> Iterator[ControllerProcess]:
        """A controller process; `repo`: run that checkout's controller instead of this one."""
        data_dir = new_dir("wsctl-bench-")
        proc = ControllerProcess(data_dir=data_dir, network=self.network, instance=instance,
                                 gateway=self.gateway, env={"WSCTL_SECRET_BENCH_API_KEY": KEY},
                                 flags=flags, verbose=False, repo=repo or REPO)
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
    name = f"wsctl-bench-{os.getpid()}"
    network = client.networks.create(name, driver="bridge")
    network.reload()
    gateway = str(network.attrs["IPAM"]["Config"][0]["Gateway"])
    llm = FakeLLMThread(gateway, KEY).start()
    try:
        yield Fleet(client, name, gateway, llm)
    finally:
        llm.stop()
        for c in client.containers.list(all=True, filters={"network": name}):
            c.remove(force=True)
        network.remove()


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
