"""In-memory stand-ins for Docker, the admin API and the controller process."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.adapters.chaos_docker import ContainerView
from controller.chaos.faults import FaultContext
from controller.chaos.model import FaultPlan, FaultRecord


def view(workspace: str, generation: int, state: str = "running",
         config_hash: str = "h1") -> ContainerView:
    return ContainerView(id=f"id-{workspace}-g{generation}",
                         name=f"wsctl-{workspace}-g{generation}", workspace_id=workspace,
                         state=state, config_hash=config_hash, token_generation=generation)


@dataclass
class FakeEngine:
    views: list[ContainerView] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    reach: dict[str, str] = field(default_factory=dict)
    """probe: outcome by target label (default unreachable)."""
    """Listed as running, but inspect says the process is gone (the list trails)."""

    def containers(self) -> list[Any]:
        return list(self.views)

    def running_now(self, container_ids: list[str]) -> list[str]:
        alive = {v.id for v in self.views if v.running} - self.dead
        return [i for i in container_ids if i in alive]

    def read_token(self, container_id: str) -> str | None:
        return self.tokens.get(container_id)

    def kill(self, container_id: str, sig: str = "SIGKILL") -> None:
        self.calls.append(("kill", container_id, sig))

    def stop(self, container_id: str, grace_seconds: int = 2) -> None:
        self.calls.append(("stop", container_id))

    def remove(self, container_id: str) -> None:
        self.calls.append(("remove", container_id))

    def pause(self, container_id: str) -> None:
        self.calls.append(("pause", container_id))

    def unpause(self, container_id: str) -> None:
        self.calls.append(("unpause", container_id))

    def restart(self, container_id: str, grace_seconds: int = 2) -> None:
        self.calls.append(("restart", container_id))

    def network_disconnect(self, network: str, container_id: str) -> None:
        self.calls.append(("disconnect", network, container_id))

    def network_connect(self, network: str, container_id: str) -> None:
        self.calls.append(("connect", network, container_id))

    def delete_token(self, container_id: str) -> None:
        self.calls.append(("delete_token", container_id))

    def corrupt_token(self, container_id: str, garbage: str) -> None:
        self.calls.append(("corrupt_token", container_id))

    def write_file(self, container_id: str, directory: str, name: str, content: str) -> None:
        self.calls.append(("write_file", container_id, f"{directory}/{name}"))

    def environment(self, container_id: str) -> list[str]:
        return [f"WSCTL_WORKSPACE_ID={container_id}"]

    def file_digests(self, container_id: str, directory: str) -> dict[str, str]:
        self.calls.append(("file_digests", container_id, directory))
        return {}

    def addresses(self, container_id: str) -> dict[str, str]:
        return {"wsctl": "10.9.0." + str(1 + sum(map(ord, container_id)) % 200)}

    def gateway(self, network: str) -> str | None:
        return {"wsctl": "10.9.0.1", "bridge": "172.17.0.1"}.get(network)

    def probe(self, container_id: str, script: str, args: list[str]) -> str:
        self.calls.append(("probe", container_id))
        tried = json.loads(args[0])
        return json.dumps([self.reach.get(t[0], "unreachable: TimeoutError") for t in tried])


@dataclass
class FakeApi:
    applied: list[list[dict[str, Any]]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    delete_status: int = 202
    suspend_result: str = "suspending"
    suspensions: list[int] = field(default_factory=list)
    """The `Suspended` event count each `describe` answers, in order (then 0)."""
    exists_answers: list[bool | None] = field(default_factory=list)
    """What `exists` answers, in order (then False: gone)."""

    async def apply(self, objects: list[dict[str, Any]]) -> Any:
        self.applied.append(objects)
        return {"results": []}

    async def delete(self, name: str) -> int:
        self.calls.append(("delete", name))
        return self.delete_status

    async def exists(self, name: str) -> bool | None:
        self.calls.append(("exists", name))
        return self.exists_answers.pop(0) if self.exists_answers else False

    async def suspend(self, name: str) -> str:
        self.calls.append(("suspend", name))
        return self.suspend_result

    async def describe(self, name: str) -> dict[str, Any]:
        """Events as the controller dedupes them: one `Suspended` row with a count."""
        self.calls.append(("describe", name))
        count = self.suspensions.pop(0) if self.suspensions else 0
        return {"events": [{"reason": "Ready", "count": 2},
                           *([{"reason": "Suspended", "count": count}] if count else [])]}


@dataclass
class FakeController:
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    log: str = ""
    stall_logged_on_kill: str | None = None

    async def kill(self) -> None:
        self.calls.append(("kill", {}))

    async def start(self, extra_env: Mapping[str, str] | None = None) -> None:
        self.calls.append(("start", dict(extra_env or {})))

    def log_text(self) -> str:
        return self.log


class Clock:
    """Fake time: `sleep` advances it instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def inline(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def context(engine: FakeEngine, api: FakeApi | None = None, *, clock: Clock | None = None,
            detected: bool = True, controller: FakeController | None = None,
            **extra: Any) -> tuple[FaultContext, Clock, list[tuple[str, str, float]]]:
    clock = clock or Clock()
    waits: list[tuple[str, str, float]] = []

    async def wait_reason(name: str, reason: str, seconds: float) -> bool:
        waits.append((name, reason, seconds))
        return detected

    manifests = {"w01": {"metadata": {"name": "w01", "namespace": "chaos"},
                         "spec": {"env": [{"name": "LOG_LEVEL", "value": "info"}]}}}
    ctx = FaultContext(engine=engine, api=api or FakeApi(), namespace="chaos", network="net",
                       heartbeat_ttl=3.0, manifests=manifests, clock=clock,
                       wait_reason=wait_reason, run_blocking=inline, sleep=clock.sleep,
                       controller=controller, **extra)
    return ctx, clock, waits


def record(kind: str, target: str | None = "w01", **params: str) -> tuple[FaultPlan, FaultRecord]:
    plan = FaultPlan(1, kind, target, 0.0, tuple(sorted(params.items())))
    return plan, FaultRecord(plan, (target,) if target else ("w01", "w02"))
