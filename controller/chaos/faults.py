"""Fault injectors: one small class per fault type.

Each injector says what it may do to a workspace's status (`may_cause`: the
Degraded reasons a correct controller may report while it is in effect, and
`must_cause`: those it must report, because the fault is visible), whether the
workspace must end up on a new container (`replaces_container`), and what the
harness must own to inject it (`requires`). `inject()` breaks something and,
for faults with a duration, mends it; it stamps `injected_at` and `lifted_at`
(when the cause is gone) on the record. Convergence is the runner's business.

Waiting inside an injector (a pause longer than the heartbeat TTL, a spec left
broken until the controller reports it) is the fault itself, not a test sleep.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import secrets
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, ParamSpec, TypeVar

from controller.chaos import lateral
from controller.chaos.kinds import OWNS_CONTROLLER as OWNS_CONTROLLER
from controller.chaos.kinds import OWNS_ENGINE as OWNS_ENGINE
from controller.chaos.kinds import OWNS_POSTGRES as OWNS_POSTGRES
from controller.chaos.model import FaultPlan, FaultRecord, Scope
from controller.chaos.ports import Api, ChaosEngine, ContainerLike, ControllerHandle, Sleep
from controller.core.conditions import DegradedReason
from controller.core.errors import WsctlError

P = ParamSpec("P")
T = TypeVar("T")

HEARTBEAT_STALE = DegradedReason.HEARTBEAT_STALE.value
CRASH_LOOPING = DegradedReason.CRASH_LOOPING.value
REGISTER_FAILED = DegradedReason.REGISTER_FAILED.value
RECREATE_FAILED = DegradedReason.RECREATE_FAILED.value

# Ops of a recreate after a container died (no StopContainer: the old one is not running).
# Every op of a recreate, in order (core/plan.py `_plan_recreate`).
STALL_POINTS = ("CaptureDiagnostics", "CreateContainer", "WriteToken", "ActivateToken",
                "StopContainer", "RemoveContainer", "StartContainer")


class FaultSkipped(WsctlError):
    """The fault could not be injected (e.g. the target had no running container)."""


@dataclass
class FaultContext:
    """Everything an injector may touch."""

    engine: ChaosEngine
    api: Api
    namespace: str
    network: str
    heartbeat_ttl: float
    manifests: Mapping[str, dict[str, Any]]
    """The workspace objects as first applied, by name: a spec fault reverts to these."""
    clock: Callable[[], float]
    wait_reason: Callable[[str, str, float], Awaitable[bool]]
    """(workspace, Degraded reason, timeout) -> whether the controller reported it in time."""
    run_blocking: Callable[..., Awaitable[Any]] = field(default=asyncio.to_thread)
    sleep: Sleep = asyncio.sleep
    controller: ControllerHandle | None = None
    restart_postgres: Callable[[], Awaitable[None]] | None = None
    restart_docker: Callable[[], Awaitable[None]] | None = None
    egress_port: int | None = None
    """The controller's egress proxy port (known when the harness started it)."""
    deleted: Callable[[str], None] = lambda name: None
    """Told that a workspace is gone, before it is applied again: what the run holds of
    its previous life (tokens read) belongs to a workspace that no longer exists."""

    async def docker(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = await self.run_blocking(fn, *args, **kwargs)
        return result

    def workspace_id(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    async def container(self, name: str) -> ContainerLike:
        """The workspace's running container (newest generation)."""
        wanted = self.workspace_id(name)
        running: list[ContainerLike] = [c for c in await self.docker(self.engine.containers)
                                        if c.workspace_id == wanted and c.running]
        if not running:
            raise FaultSkipped(f"{name} has no running container")
        return max(running, key=lambda c: c.token_generation)

    def with_env(self, name: str, env: Mapping[str, str]) -> dict[str, Any]:
        """The workspace's original object with extra spec.env entries."""
        obj = copy.deepcopy(dict(self.manifests[name]))
        spec = obj.setdefault("spec", {})
        spec["env"] = [*spec.get("env", []), *({"name": k, "value": v} for k, v in env.items())]
        return obj


class Fault(ABC):
    kind: ClassVar[str]
    scope: ClassVar[Scope] = "workspace"
    may_cause: ClassVar[frozenset[str]] = frozenset()
    must_cause: ClassVar[frozenset[str]] = frozenset()
    replaces_container: ClassVar[bool] = False
    may_stay: ClassVar[bool] = False
    """The workspace may rightly converge on the container it had: `stayed()` says why."""
    requires: ClassVar[frozenset[str]] = frozenset()
    weight: ClassVar[int] = 3
    summary: ClassVar[str] = ""

    def params(self, rng: random.Random, workspaces: list[str]) -> dict[str, str]:
        """Parameters drawn from the schedule's random stream (deterministic per seed)."""
        return {}

    def replaced(self, plan: FaultPlan) -> str | None:
        """The workspace that must end up on a new container, if any."""
        return plan.target if self.replaces_container else None

    def causes(self, plan: FaultPlan) -> frozenset[str]:
        """The Degraded reasons this planned fault may cause (`may_cause` unless refined)."""
        return self.may_cause

    @abstractmethod
    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None: ...

    async def stayed(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord
                     ) -> str | None:
        """Why converging on the same container is right for this fault, or None (then
        it is a violation: the fault should have replaced it)."""
        return None

    @staticmethod
    def _mark(ctx: FaultContext, record: FaultRecord, *, lifted: bool = True) -> None:
        record.injected_at = ctx.clock()
        if lifted:
            record.lifted_at = record.injected_at

    async def _strike(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord, *,
                      lifted: bool = True) -> ContainerLike:
        """The target's running container, recorded as the one hit, and the fault
        marked injected (and lifted at once unless `lifted` is False)."""
        c = await ctx.container(_target(plan))
        record.before_container = c.id
        self._mark(ctx, record, lifted=lifted)
        return c


def _target(plan: FaultPlan) -> str:
    if plan.target is None:
        raise FaultSkipped(f"{plan.kind} needs a target workspace")
    return plan.target


# ------------------------------------------------------------------ container faults


class KillContainer(Fault):
    kind = "kill"
    summary = "SIGKILL the agent container"
    may_cause = frozenset({CRASH_LOOPING})  # when the workspace died often in the crash window
    replaces_container = True

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        c = await self._strike(ctx, plan, record)
        await ctx.docker(ctx.engine.kill, c.id)


class StopContainer(Fault):
    kind = "stop"
    summary = "docker stop (SIGTERM, then SIGKILL after 2 s)"
    may_cause = frozenset({CRASH_LOOPING})
    replaces_container = True

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        c = await self._strike(ctx, plan, record)
        await ctx.docker(ctx.engine.stop, c.id, 2)


class RemoveContainer(Fault):
    kind = "remove"
    summary = "docker rm -f"
    replaces_container = True

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        c = await self._strike(ctx, plan, record)
        await ctx.docker(ctx.engine.remove, c.id)


class PauseContainer(Fault):
    kind = "pause"
    summary = "docker pause for longer than the heartbeat TTL, then unpause"
    may_cause = frozenset({HEARTBEAT_STALE})
    must_cause = frozenset({HEARTBEAT_STALE})

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        c = await self._strike(ctx, plan, record, lifted=False)
        await ctx.docker(ctx.engine.pause, c.id)
        await ctx.sleep(ctx.heartbeat_ttl + 2.0)
        await ctx.docker(ctx.engine.unpause, c.id)
        record.lifted_at = ctx.clock()


class NetworkCut(Fault):
    kind = "network"
    summary = "disconnect from the workspace network for longer than the TTL, reconnect"
    may_cause = frozenset({HEARTBEAT_STALE})
    must_cause = frozenset({HEARTBEAT_STALE})

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        c = await self._strike(ctx, plan, record, lifted=False)
        await ctx.docker(ctx.engine.network_disconnect, ctx.network, c.id)
        try:
            await ctx.sleep(ctx.heartbeat_ttl + 2.0)
        finally:
            await ctx.docker(ctx.engine.network_connect, ctx.network, c.id)
        record.lifted_at = ctx.clock()


class TokenFault(Fault):
    """The agent holds its token in memory, so the damage shows when it reads the file
    again: the container is restarted (`docker restart`), as a host reboot would."""

    kind = "token"
    summary = "token file deleted or corrupted inside the container, then docker restart"
    may_cause = frozenset({CRASH_LOOPING})  # the restart is a container exit
    replaces_container = True

    def params(self, rng: random.Random, workspaces: list[str]) -> dict[str, str]:
        return {"variant": rng.choice(("delete", "corrupt"))}

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        c = await self._strike(ctx, plan, record)
        if plan.param("variant") == "delete":
            await ctx.docker(ctx.engine.delete_token, c.id)
        else:
            await ctx.docker(ctx.engine.corrupt_token, c.id, "corrupt-" + secrets.token_hex(8))
        await ctx.docker(ctx.engine.restart, c.id, 2)


# ------------------------------------------------------------------ lifecycle faults


class SuspendWake(Fault):
    """Suspended through the admin API while the workload keeps sending: the next
    message wakes it (a new container on the same storage) and must be answered, not
    refused (the runner checks every message sent after the suspension). Suspended is
    a state, not a degradation: nothing may be reported Degraded."""

    kind = "suspend"
    summary = "suspend through the admin API under traffic; the next message wakes it"
    replaces_container = True
    may_stay = True
    weight = 2

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        name = _target(plan)
        record.suspensions_before = await _suspensions(ctx, name)
        await self._strike(ctx, plan, record, lifted=False)
        result = await ctx.api.suspend(name)
        if result != "suspending":
            record.missed = f"suspend answered {result!r}"
        record.lifted_at = ctx.clock()  # suspended: from here on every message must wake it

    async def stayed(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord
                     ) -> str | None:
        """A message that lands between the request and the reconcile that would carry
        it out wakes the workspace before it ever stopped: the suspension is superseded
        and the container rightly kept. Right only if no suspension took effect (the
        workspace's `Suspended` event did not count up)."""
        if record.suspensions_before is None:
            return None
        if await _suspensions(ctx, _target(plan)) != record.suspensions_before:
            return None
        return "a message arrived before the suspension took effect: woken in place"


async def _suspensions(ctx: FaultContext, name: str) -> int:
    """How many times the workspace was suspended, by its `Suspended` events."""
    events = (await ctx.api.describe(name)).get("events") or []
    return sum(int(e.get("count") or 1) for e in events if e.get("reason") == "Suspended")


class DeleteReapply(Fault):
    """Deleted through the admin API (storage retained: reclaimPolicy Retain), waited
    for until it is gone (no container, GET 404), then the same manifest applied again:
    a new workspace on the retained volume, its files still there."""

    kind = "delete-reapply"
    summary = "delete through the API, wait until it is gone, apply the same manifest again"
    replaces_container = True
    weight = 2
    gone_timeout = 60.0

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        name = _target(plan)
        await self._strike(ctx, plan, record, lifted=False)
        status = await ctx.api.delete(name)
        if status not in (200, 202):
            record.missed = f"delete answered HTTP {status or 'nothing'}"
            record.lifted_at = ctx.clock()
            return
        deadline = ctx.clock() + self.gone_timeout
        while not await self._gone(ctx, name):
            if ctx.clock() > deadline:  # not applied again: `converge` reports it
                record.missed = f"{name} still there {self.gone_timeout:.0f}s after the delete"
                record.lifted_at = ctx.clock()
                return
            await ctx.sleep(0.2)  # polling for the deletion to finish is part of the fault
        record.notes.append(f"gone {ctx.clock() - (record.injected_at or 0.0):.1f}s after "
                            "the delete")
        ctx.deleted(name)
        await ctx.api.apply([ctx.manifests[name]])
        record.lifted_at = ctx.clock()

    @staticmethod
    async def _gone(ctx: FaultContext, name: str) -> bool:
        wanted = ctx.workspace_id(name)
        if any(c.workspace_id == wanted for c in await ctx.docker(ctx.engine.containers)):
            return False
        return await ctx.api.exists(name) is False


# ------------------------------------------------------------------ agent (spec) faults


class BadRegister(Fault):
    """The agent is made (AGENT_REGISTER_PAYLOAD) to register with a payload the registry
    refuses; once the controller reports it, the spec is reverted."""

    kind = "bad-register"
    summary = "agent registers with a bad payload (no url, private url, bad card)"
    may_cause = frozenset({REGISTER_FAILED})
    must_cause = frozenset({REGISTER_FAILED})
    replaces_container = True
    detect_timeout = 30.0

    def params(self, rng: random.Random, workspaces: list[str]) -> dict[str, str]:
        return {"payload": rng.choice(("no_url", "private_url", "bad_card"))}

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        name = _target(plan)
        record.before_container = (await ctx.container(name)).id
        self._mark(ctx, record, lifted=False)
        await ctx.api.apply([ctx.with_env(name, {"AGENT_REGISTER_PAYLOAD": plan.param("payload")})])
        if not await ctx.wait_reason(name, REGISTER_FAILED, self.detect_timeout):
            record.notes.append(f"no {REGISTER_FAILED} within {self.detect_timeout:.0f}s")
        await ctx.api.apply([ctx.manifests[name]])
        record.lifted_at = ctx.clock()


class CrashLoop(Fault):
    kind = "crash-loop"
    summary = "agent exits 1 s after every start (AGENT_EXIT_AFTER_SECONDS) until reported"
    may_cause = frozenset({CRASH_LOOPING})
    must_cause = frozenset({CRASH_LOOPING})
    replaces_container = True
    detect_timeout = 60.0

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        name = _target(plan)
        record.before_container = (await ctx.container(name)).id
        self._mark(ctx, record, lifted=False)
        await ctx.api.apply([ctx.with_env(name, {"AGENT_EXIT_AFTER_SECONDS": "1"})])
        if not await ctx.wait_reason(name, CRASH_LOOPING, self.detect_timeout):
            record.notes.append(f"no {CRASH_LOOPING} within {self.detect_timeout:.0f}s")
        await ctx.api.apply([ctx.manifests[name]])
        record.lifted_at = ctx.clock()


# ------------------------------------------------------------------ fleet faults


class ControllerCrash(Fault):
    """SIGKILL the controller and start it again: at a random moment, or mid-recreate
    (restarted with WSCTL_DEBUG_STALL_AFTER_OP, a recreate triggered by killing the
    target workspace's container, SIGKILLed once it stalls after that op)."""

    kind = "controller-kill"
    scope = "fleet"
    summary = "controller SIGKILL and restart, at a random moment or mid-recreate"
    may_cause = frozenset({HEARTBEAT_STALE})  # agents could not heartbeat while it was down
    requires = frozenset({OWNS_CONTROLLER})
    weight = 2
    stall_timeout = 30.0

    def params(self, rng: random.Random, workspaces: list[str]) -> dict[str, str]:
        stall = rng.choice(("none", "none", *STALL_POINTS))
        if stall == "none":
            return {"stall": stall, "after_ms": str(rng.randrange(0, 1500))}
        return {"stall": stall, "workspace": rng.choice(workspaces)}

    def replaced(self, plan: FaultPlan) -> str | None:
        return plan.param("workspace") or None

    def causes(self, plan: FaultPlan) -> frozenset[str]:
        # Mid-recreate, the target's container is SIGKILLed to start the recreate: a
        # death like `kill`'s, which may make a workspace that died often CrashLooping.
        return self.may_cause | ({CRASH_LOOPING} if plan.param("workspace") else set())

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        controller = ctx.controller
        if controller is None:
            raise FaultSkipped("the harness does not own the controller")
        stall = plan.param("stall", "none")
        self._mark(ctx, record, lifted=False)
        if stall == "none":
            await ctx.sleep(int(plan.param("after_ms", "0")) / 1000)
        else:
            name = plan.param("workspace")
            await controller.kill()
            await controller.start({"WSCTL_DEBUG_STALL_AFTER_OP": stall})
            c = await ctx.container(name)
            record.before_container = c.id
            marker = f"stalling after {stall}"
            seen_before = controller.log_text().count(marker)
            await ctx.docker(ctx.engine.kill, c.id)
            deadline = ctx.clock() + self.stall_timeout
            while controller.log_text().count(marker) <= seen_before:
                if ctx.clock() > deadline:
                    record.missed = f"controller never logged '{marker}'"
                    break
                await ctx.sleep(0.1)  # polling the controller's log for the stall
        await controller.kill()
        await controller.start()
        record.lifted_at = ctx.clock()


class PostgresRestart(Fault):
    kind = "postgres-restart"
    scope = "fleet"
    summary = "pg_ctl restart -m fast of the embedded PostgreSQL"
    # Heartbeats cannot be recorded and a recreate step may fail while it is down.
    may_cause = frozenset({HEARTBEAT_STALE, RECREATE_FAILED})
    requires = frozenset({OWNS_POSTGRES})
    weight = 2

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        if ctx.restart_postgres is None:
            raise FaultSkipped("no embedded PostgreSQL to restart")
        self._mark(ctx, record, lifted=False)
        await ctx.restart_postgres()
        record.lifted_at = ctx.clock()


class DockerRestart(Fault):
    kind = "docker-restart"
    scope = "fleet"
    summary = "Docker engine restart (every container stops)"
    # Not CrashLooping: containers that die with the engine are no crash of their agent.
    may_cause = frozenset({HEARTBEAT_STALE, RECREATE_FAILED})
    requires = frozenset({OWNS_ENGINE})
    weight = 1

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        if ctx.restart_docker is None:
            raise FaultSkipped("--docker-restart was not given")
        self._mark(ctx, record, lifted=False)
        await ctx.restart_docker()
        record.lifted_at = ctx.clock()


# ------------------------------------------------------------------ the boundary


class Lateral(Fault):
    """The target tries every lateral path (controller/chaos/lateral.py), under the
    run's traffic; each one that works is a breach of `isolation`. Nothing is broken,
    so nothing is to be reported and the workspace keeps its container."""

    kind = "lateral"
    summary = "a workspace tries other workspaces, the host and a non-allowed host"
    weight = 2

    async def inject(self, ctx: FaultContext, plan: FaultPlan, record: FaultRecord) -> None:
        name = _target(plan)
        me = await self._strike(ctx, plan, record)
        others: dict[str, tuple[str, list[str]]] = {}
        for c in await ctx.docker(ctx.engine.containers):
            if c.running and c.workspace_id != me.workspace_id:
                addresses = await ctx.docker(ctx.engine.addresses, c.id)
                others[c.workspace_id] = (c.name, sorted(addresses.values()))
        networks = await ctx.docker(ctx.engine.addresses, me.id)
        gateways = [await ctx.docker(ctx.engine.gateway, n) for n in (*networks, "bridge")]
        hosts = [g for g in gateways if g] + ["host.docker.internal"]
        bait_host = next((g for g in gateways if g), "host.docker.internal")
        proxy = f"host.docker.internal:{ctx.egress_port}" if ctx.egress_port else None
        async with lateral.Bait().open() as bait:
            tried = lateral.targets(others, hosts, bait.port, proxy, bait_host)
            output = await ctx.docker(ctx.engine.probe, me.id, lateral.SCRIPT,
                                      [json.dumps([t.as_json() for t in tried]),
                                       str(lateral.ATTEMPT_SECONDS)])
            outcomes = lateral.parse(output, tried)
        record.breaches = lateral.breaches(tried, outcomes)
        if bait.accepted:
            record.breaches.append(f"the bait on the host accepted {bait.accepted} "
                                   "connection(s)")
        record.notes.append(f"{name}: {len(tried)} lateral path(s) tried, "
                            f"{len(record.breaches)} reached"
                            + ("" if proxy else "; no egress port known: proxy not tried"))


FAULTS: dict[str, Fault] = {f.kind: f for f in (
    KillContainer(), StopContainer(), RemoveContainer(), PauseContainer(), NetworkCut(),
    TokenFault(), SuspendWake(), DeleteReapply(), BadRegister(), CrashLoop(), ControllerCrash(),
    PostgresRestart(), DockerRestart(), Lateral(),
)}


def available(capabilities: set[str], only: list[str] | None = None) -> list[Fault]:
    """The fault types this run can inject, in a fixed order (part of the schedule)."""
    chosen = [f for f in FAULTS.values() if f.requires <= capabilities]
    if only:
        unknown = sorted(set(only) - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown fault type(s) {', '.join(unknown)}; "
                             f"known: {', '.join(FAULTS)}")
        missing = sorted(k for k in only if FAULTS[k] not in chosen)
        if missing:
            raise ValueError(f"fault type(s) {', '.join(missing)} need what this run lacks "
                             f"({', '.join(sorted(FAULTS[m].requires)[0] for m in missing)})")
        chosen = [f for f in chosen if f.kind in only]
    return chosen
