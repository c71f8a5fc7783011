"""TEST-ONLY knobs that break the controller on purpose. Never set them in production.

They exist so the chaos harness can prove it notices each broken invariant
(tests/chaos/test_chaos_run.py). Each is an environment variable of
`wsctl run`; unset (the default) means no effect at all. Only the composition
root (runtime.py) applies them, by wrapping what it wires together:

  WSCTL_DEBUG_BREAK_RECREATE=1          recreate plans are not executed (a first create is)
  WSCTL_DEBUG_BREAK_STOP_OLD=1          containers are never stopped or removed, so a
                                        recreate leaves the old one running
  WSCTL_DEBUG_BREAK_TOKEN_REVOCATION=1  the registry accepts revoked (older) tokens
  WSCTL_DEBUG_BREAK_TOKEN_EXPIRY=1      the registry accepts expired tokens
  WSCTL_DEBUG_BREAK_ACTIVITY_WRITES=1   the A2A proxy acknowledges without an activity row
  WSCTL_DEBUG_BREAK_LOG_SECRET=1        secret values from the environment are logged
  WSCTL_DEBUG_BREAK_DEGRADED_REASON=1   HeartbeatStale is reported as AgentUnhealthy
  WSCTL_DEBUG_BREAK_SERVES=1            the A2A proxy dials a port where no agent listens,
                                        so a Ready workspace does not answer
  WSCTL_DEBUG_BREAK_STORAGE=1           every container but a workspace's first (recreates,
                                        a suspension's standby) mounts a fresh volume of its
                                        own at the storage mount path instead of the
                                        workspace's: the agent runs, its files are gone
  WSCTL_DEBUG_BREAK_KEY_IN_CONTAINER=1  a gateway-mode container gets a provider key from
                                        the controller's WSCTL_SECRET_* environment in
                                        its credential variables, as in access: direct
  WSCTL_DEBUG_BREAK_OPEN_NETWORK=1      every container also joins the `open` network
                                        (an ordinary bridge), whatever its spec.egress
  WSCTL_DEBUG_STALL_AFTER_OP=OpName     after an op of that type (e.g. WriteToken), the
                                        executor hangs forever: crash tests then SIGKILL
                                        the controller at that point of a recreate

The composition root imports this module only when one of them is set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.api.a2a import ActivityStore, AgentAddress, AgentTarget
from controller.api.registry import RegistryStore
from controller.core.conditions import DegradedReason
from controller.core.containerspec import Mount
from controller.core.model import WorkspaceKey, WorkspaceStatus
from controller.core.ops import (
    CreateContainer,
    Event,
    Op,
    Plan,
    RemoveContainer,
    StopContainer,
)
from controller.core.settings import CONFIG_MOUNT
from controller.reconcile.execute import Executor
from controller.reconcile.ports import DriverStore

log = logging.getLogger("wsctl.debug")

PREFIX = "WSCTL_DEBUG_BREAK_"
STALL = "WSCTL_DEBUG_STALL_AFTER_OP"
KNOBS = ("RECREATE", "STOP_OLD", "TOKEN_REVOCATION", "TOKEN_EXPIRY", "ACTIVITY_WRITES",
         "LOG_SECRET", "DEGRADED_REASON", "SERVES", "STORAGE", "KEY_IN_CONTAINER",
         "OPEN_NETWORK")
_TRUE = {"1", "true", "yes"}
_WRONG_FROM = DegradedReason.HEARTBEAT_STALE.value
_WRONG_TO = DegradedReason.AGENT_UNHEALTHY.value


@dataclass(frozen=True)
class DebugBreaks:
    recreate: bool = False
    stop_old: bool = False
    token_revocation: bool = False
    token_expiry: bool = False
    activity_writes: bool = False
    log_secret: bool = False
    degraded_reason: bool = False
    serves: bool = False
    storage: bool = False
    key_in_container: bool = False
    open_network: bool = False
    stall_after_op: str | None = None
    keys: tuple[str, ...] = ()
    """The WSCTL_SECRET_* values of the environment (for key_in_container)."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> DebugBreaks:
        breaks = cls(**{k.lower(): environ.get(PREFIX + k, "").lower() in _TRUE for k in KNOBS},
                     stall_after_op=environ.get(STALL) or None,
                     keys=tuple(v for k, v in sorted(environ.items())
                                if k.startswith("WSCTL_SECRET_") and v))
        for knob in KNOBS:
            if getattr(breaks, knob.lower()):
                log.warning("TEST-ONLY %s%s is set: this controller is broken on purpose",
                            PREFIX, knob)
        return breaks

    async def stall(self, key: WorkspaceKey, op: Op) -> None:
        """The executor's after-op hook: hang forever after an op of the named type."""
        if type(op).__name__ == self.stall_after_op:
            log.warning("%s: fault injection: stalling after %s", key, self.stall_after_op)
            await asyncio.Event().wait()

    def log_secrets(self, environ: Mapping[str, str]) -> None:
        if self.log_secret:
            for name, value in sorted(environ.items()):
                if name.startswith("WSCTL_SECRET_"):
                    log.info("broken on purpose: %s=%s", name, value)

    def executor(self, executor: Executor) -> Executor:
        if self.stall_after_op:
            executor = dataclasses.replace(executor, after_op=self.stall)
        if not (self.recreate or self.stop_old or self.degraded_reason or self.storage
                or self.key_in_container or self.open_network):
            return executor
        values = {f.name: getattr(executor, f.name) for f in dataclasses.fields(Executor)}
        return _BrokenExecutor(**values, breaks=self)

    def agent_address(self, lookup: AgentAddress) -> AgentAddress:
        if not self.serves:
            return lookup

        async def nowhere(workspace_id: str) -> AgentTarget | None:
            found = await lookup(workspace_id)
            return None if found is None else found._replace(port=9)  # discard: nobody
        return nowhere

    def activity_store(self, store: ActivityStore) -> ActivityStore:
        return _DroppedActivity() if self.activity_writes else store

    def registry_store(self, store: RegistryStore) -> RegistryStore:
        if not (self.token_revocation or self.token_expiry):
            return store
        return _LenientTokens(store, revoked=self.token_revocation, expired=self.token_expiry)

    def driver_store(self, store: DriverStore) -> DriverStore:
        return _MislabelledStatus(store) if self.degraded_reason else store


def _mislabel(status: WorkspaceStatus) -> WorkspaceStatus:
    conditions = [c.model_copy(update={"reason": _WRONG_TO}) if c.reason == _WRONG_FROM else c
                  for c in status.conditions]
    return status.model_copy(update={"conditions": conditions})


@dataclass
class _BrokenExecutor(Executor):
    breaks: DebugBreaks = DebugBreaks()

    async def run(self, key: WorkspaceKey, plan: Plan) -> None:
        if self.breaks.recreate and plan.action == "recreate":
            log.warning("%s: broken on purpose: recreate (%s) not executed", key, plan.reason)
            return
        if self.breaks.stop_old:
            plan = dataclasses.replace(plan, ops=tuple(
                op for op in plan.ops if not isinstance(op, StopContainer | RemoveContainer)))
        if self.breaks.storage and plan.action != "create":
            plan = dataclasses.replace(plan, ops=_forget_storage(plan.ops))
        if self.breaks.key_in_container and self.breaks.keys:
            plan = dataclasses.replace(plan, ops=_key_in_container(plan.ops, self.breaks.keys[0]))
        if self.breaks.open_network:
            plan = dataclasses.replace(plan, ops=_open_network(plan.ops))
        if self.breaks.degraded_reason:
            plan = dataclasses.replace(plan, events=tuple(
                Event(e.type, _WRONG_TO, e.message) if e.reason == _WRONG_FROM else e
                for e in plan.events))
        await super().run(key, plan)


def _forget_storage(ops: tuple[Op, ...]) -> tuple[Op, ...]:
    """A new container mounts a volume of its own generation at the storage mount path
    (a fresh, empty one; Docker gives it the image directory's owner, so the agent
    still runs and writes) instead of the workspace's storage volume (every volume
    mount but the config volume)."""
    changed: list[Op] = []
    for op in ops:
        if isinstance(op, CreateContainer):
            mounts = tuple(
                Mount(f"{m.source}-g{op.spec.token_generation}-forgotten", m.target)
                if m.type == "volume" and m.target != CONFIG_MOUNT else m
                for m in op.spec.mounts)
            if mounts != op.spec.mounts:
                log.warning("broken on purpose: %s mounts a fresh volume at the storage "
                            "path", op.spec.name)
            op = CreateContainer(dataclasses.replace(op.spec, mounts=mounts))
        changed.append(op)
    return tuple(changed)


def _open_network(ops: tuple[Op, ...]) -> tuple[Op, ...]:
    """Every new container on the open network too, as if its egress were `open`."""
    changed: list[Op] = []
    for op in ops:
        if isinstance(op, CreateContainer):
            opened = f"{op.spec.network}-open"
            if opened not in op.spec.extra_networks:
                log.warning("broken on purpose: %s joins %s", op.spec.name, opened)
                op = CreateContainer(dataclasses.replace(
                    op.spec, extra_networks=(*op.spec.extra_networks, opened)))
        changed.append(op)
    return tuple(changed)


def _key_in_container(ops: tuple[Op, ...], key: str) -> tuple[Op, ...]:
    """The key where a gateway-mode container's credential would go."""
    changed: list[Op] = []
    for op in ops:
        if isinstance(op, CreateContainer) and op.spec.wants_llm_credential:
            log.warning("broken on purpose: %s gets the provider key", op.spec.name)
            op = CreateContainer(op.spec.with_llm_credential(key))
        changed.append(op)
    return tuple(changed)


class _DroppedActivity:
    async def append_activity(self, workspace_id: str, source: str, **_: Any) -> int:
        return 0


class _LenientTokens:
    """Revoked (`revoked`) or expired (`expired`) tokens look live to the registry."""

    def __init__(self, store: RegistryStore, *, revoked: bool, expired: bool) -> None:
        self._store = store
        self._cleared = {**({"revoked_at": None} if revoked else {}),
                         **({"expires_at": None} if expired else {})}
        self.record_register = store.record_register
        self.record_register_failure = store.record_register_failure
        self.record_heartbeat = store.record_heartbeat
        self.record_auth_failure = store.record_auth_failure

    async def find_token(self, token_hash: str) -> Any:
        row = await self._store.find_token(token_hash)
        if row is not None and dataclasses.is_dataclass(row) and not isinstance(row, type):
            row = dataclasses.replace(row, **self._cleared)
        return row


class _MislabelledStatus:
    def __init__(self, store: DriverStore) -> None:
        self._store = store
        self.listen_workspace_changes = store.listen_workspace_changes
        self.list_workspaces = store.list_workspaces
        self.get_workspace = store.get_workspace

    async def write_status(self, namespace: str, name: str, status: WorkspaceStatus) -> bool:
        return await self._store.write_status(namespace, name, _mislabel(status))

