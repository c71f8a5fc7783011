"""execute(plan): walk a Plan's operations through the ports. No decisions here.

Each operation is one engine or store call. The only state carried between
operations is what a later one needs from an earlier one: the created
container's id and the minted token (which never leaves this process except
into the container's config volume; the store gets its hash).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from controller.core import redact, tokens
from controller.core.containerspec import LABEL_WORKSPACE_UID
from controller.core.errors import WsctlError
from controller.core.model import WorkspaceKey
from controller.core.ops import (
    ActivateToken,
    CaptureDiagnostics,
    CreateContainer,
    DeliverRestartContext,
    EnsureVolume,
    Op,
    Plan,
    PurgeWorkspace,
    RefreshToken,
    RemoveContainer,
    RemoveVolume,
    RevokeTokens,
    StartContainer,
    StopContainer,
    Suspend,
    WriteToken,
)
from controller.reconcile.ports import Engine, RestartContextSender, Store

log = logging.getLogger("wsctl.execute")


class ExecuteError(WsctlError):
    """An operation failed; the message names the operation and the workspace."""

    def __init__(self, key: WorkspaceKey, op: Op, cause: BaseException) -> None:
        self.key = key
        self.op = op
        self.cause = cause
        super().__init__(f"{key}: {type(op).__name__} failed: {cause}")


@dataclass
class _Scratch:
    container_ids: dict[str, str] = field(default_factory=dict)
    minted: dict[int, str] = field(default_factory=dict)


@dataclass
class Executor:
    engine: Engine
    store: Store
    host_gateway: str
    deliver: RestartContextSender | None = None
    after_op: Callable[[WorkspaceKey, Op], Awaitable[None]] | None = None
    """Awaited after each op succeeded. Unset in production; the composition root
    plugs in the test knobs' stall here (controller.testing.debug_breaks)."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    a2a_key: bytes = field(default_factory=lambda: secrets.token_bytes(tokens.A2A_KEY_BYTES),
                           repr=False)
    """The controller's A2A key (the store's, so every process and replica shares it):
    each new container gets its credential, `tokens.a2a_credential`, with its token."""

    def _expiry(self, lifetime: int | None) -> datetime | None:
        return None if lifetime is None else self.clock() + timedelta(seconds=lifetime)

    async def run(self, key: WorkspaceKey, plan: Plan) -> None:
        scratch = _Scratch()
        for op in plan.ops:
            try:
                await self._one(key, op, scratch)
            except Exception as exc:
                raise ExecuteError(key, op, exc) from exc
            if self.after_op is not None:
                await self.after_op(key, op)
        for event in plan.events:
            await self.store.add_event(key.id, event.type, event.reason,
                                       redact.redact(event.message))

    async def _one(self, key: WorkspaceKey, op: Op, scratch: _Scratch) -> None:
        workspace_id = key.id
        match op:
            case CaptureDiagnostics(container_id=cid, reason=reason):
                found = await self.engine.diagnostics(cid)
                if found is not None:
                    await self.store.add_diagnostics(
                        workspace_id, container_id=found.container_id, reason=reason,
                        state=found.state, exit_code=found.exit_code,
                        oom_killed=found.oom_killed,
                        log_tail=None if found.log_tail is None else redact.redact(found.log_tail),
                        env_names=found.env_names)
            case EnsureVolume(volume=volume, first=first):
                existing = await self.engine.ensure_volume(volume)
                uid = volume.labels.get(LABEL_WORKSPACE_UID, "")
                if first and existing is not None \
                        and existing.get(LABEL_WORKSPACE_UID, uid) != uid:
                    await self.store.add_event(
                        workspace_id, "Normal", "VolumeReattached",
                        f"re-attached volume {volume.name}, retained from an earlier "
                        f"{key} (uid {existing.get(LABEL_WORKSPACE_UID) or 'unknown'}); its "
                        f"files are at {volume.mount_path}")
            case CreateContainer(spec=spec):
                if spec.wants_llm_credential:  # gateway mode: a credential, never the key
                    assert spec.llm is not None
                    credential = tokens.mint()
                    redact.remember_token(credential)
                    await self.store.put_llm_credential(
                        workspace_id, spec.token_generation, tokens.digest(credential),
                        spec.llm.provider, spec.llm.base_url)
                    spec = spec.with_llm_credential(credential)
                scratch.container_ids[spec.name] = await self.engine.create(
                    spec, self.host_gateway)
            case WriteToken(container_name=name, generation=generation, container_id=known):
                token = tokens.mint()
                redact.remember_token(token)
                target = scratch.container_ids.get(name) or known
                if target is None:  # the credential is made from the id the proxy will see
                    raise ValueError(f"no container id for {name}: created in another plan")
                credential = tokens.a2a_credential(self.a2a_key, workspace_id, generation,
                                                   target)
                redact.remember_token(credential)
                await self.engine.put_token(target, token, a2a_credential=credential)
                scratch.minted[generation] = token
            case ActivateToken(container_name=name, generation=generation,
                               expiration_seconds=lifetime):
                token = scratch.minted.pop(generation)
                await self.store.insert_token(workspace_id, generation, tokens.digest(token),
                                              scratch.container_ids.get(name),
                                              expires_at=self._expiry(lifetime))
            case RefreshToken(container_id=cid, generation=generation,
                              expiration_seconds=lifetime):
                token = tokens.mint()
                redact.remember_token(token)
                token_hash = tokens.digest(token)
                await self.store.rotate_token(workspace_id, generation, token_hash,
                                              expires_at=self._expiry(lifetime))
                await self.engine.put_token(cid, token)
                log.info("%s: token refreshed (generation %d, fingerprint %s)", key,
                         generation, tokens.fingerprint(token_hash))
            case StopContainer(container_id=cid, timeout=timeout):
                await self.engine.stop(cid, timeout)
            case RemoveContainer(container_id=cid):
                await self.engine.remove(cid)
            case StartContainer(container_name=name):
                await self.engine.start(scratch.container_ids.get(name, name))
            case RevokeTokens():
                await self.store.revoke_tokens(workspace_id)
            case RemoveVolume(name=name):
                await self.engine.remove_volume(name)
            case DeliverRestartContext(generation=generation, message=message):
                if self.deliver is not None:
                    await self.deliver(workspace_id, generation, message)
            case Suspend(reason=reason):
                await self.store.suspend(workspace_id, reason)
            case PurgeWorkspace():
                await self.store.purge_workspace(key.namespace, key.name)
