"""In-memory fakes of the store and the container engine, for fast unit tests.

`FakeStore` implements the methods the registry, the admin API, the A2A proxy
and the executor call, with the semantics of `controller.adapters.postgres.Store`
(the SQL is the reference; each method says which rule it copies). It returns
the adapter's own record types, so handlers see the same shapes as in production.
`FakeEngine` records every call and can be told to fail one of them.

Both append to one shared `calls` log when given the same list, so a test can
check the interleaving of engine and store calls.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from controller.adapters.postgres import (
    HEALTHY,
    ConflictError,
    LlmCredentialRecord,
    Registration,
    TokenRecord,
    WorkspaceTerminatingError,
)
from controller.core.containerspec import ContainerSpec, VolumeSpec
from controller.core.model import (
    PURGE_ANNOTATION,
    RegisterFailure,
    Workspace,
    WorkspaceKey,
    WorkspaceStatus,
)
from controller.core.observed import ContainerDiagnostics, ObservedContainer

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
INT4_MAX = 2**31 - 1

Call = tuple[Any, ...]


class StrictClock:
    """now(), strictly increasing: two writes never share a timestamp (as rows in
    separate transactions practically never do), so "newer than" is well defined."""

    def __init__(self, start: datetime | None = None) -> None:
        self._last = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        now = max(datetime.now(UTC), self._last + timedelta(microseconds=1))
        self._last = now
        return now


def _empty_registration(workspace_id: str) -> Registration:
    return Registration(workspace_id=workspace_id, url=None, agent_card=None,
                        token_generation=None, registered_at=None, last_heartbeat_at=None,
                        heartbeat_status=None, heartbeat_error_detail=None, active_tasks=None,
                        uptime_seconds=None, register_failure=None)


@dataclass
class FakeStore:
    clock: Callable[[], datetime] = field(default_factory=StrictClock)
    calls: list[Call] = field(default_factory=list)
    workspaces: dict[tuple[str, str], Workspace] = field(default_factory=dict)
    tokens: list[TokenRecord] = field(default_factory=list)
    llm_credentials: dict[str, LlmCredentialRecord] = field(default_factory=dict)
    """By credential hash."""
    registrations: dict[str, Registration] = field(default_factory=dict)
    events: list[tuple[str, str, str, str]] = field(default_factory=list)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    activity: list[dict[str, Any]] = field(default_factory=list)
    suspensions: dict[str, str] = field(default_factory=dict)
    token_inserted: asyncio.Event = field(default_factory=asyncio.Event)

    # ------------------------------------------------------------ workspaces

    async def apply_workspace(self, ws: Workspace) -> Workspace:
        """Generation moves only when the spec changes; uid, creation time and
        status are kept; a workspace being deleted cannot be applied."""
        self.calls.append(("store.apply_workspace", str(ws.key)))
        key = (ws.metadata.namespace, ws.metadata.name)
        before = self.workspaces.get(key)
        if before is None:
            meta = ws.metadata.model_copy(update={
                "generation": 1, "uid": str(uuid.uuid4()), "resource_version": "1",
                "creation_timestamp": self.clock(), "deletion_timestamp": None})
            stored = ws.model_copy(update={"metadata": meta, "status": None})
        else:
            if before.metadata.deletion_timestamp is not None:
                raise WorkspaceTerminatingError(f"workspace {ws.key} is being deleted")
            changed = ws.spec.model_dump(mode="json") != before.spec.model_dump(mode="json")
            assert before.metadata.generation is not None
            meta = before.metadata.model_copy(update={
                "labels": ws.metadata.labels, "annotations": ws.metadata.annotations,
                "generation": before.metadata.generation + (1 if changed else 0)})
            stored = before.model_copy(update={"metadata": meta, "spec": ws.spec})
        self.workspaces[key] = stored
        return stored

    async def apply_workspaces(self, workspaces: Sequence[Workspace]
                               ) -> list[tuple[int | None, Workspace]]:
        """As the real store: all in one transaction, so none if one is being deleted."""
        saved = dict(self.workspaces)
        done: list[tuple[int | None, Workspace]] = []
        try:
            for ws in workspaces:
                before = self.workspaces.get((ws.metadata.namespace, ws.metadata.name))
                done.append((None if before is None else before.metadata.generation,
                             await self.apply_workspace(ws)))
        except WorkspaceTerminatingError:
            self.workspaces = saved
            raise WorkspaceTerminatingError(
                f"workspace {ws.key} is being deleted; nothing was applied (apply again once "
                "it is gone)") from None
        return done

    async def get_workspace(self, namespace: str, name: str) -> Workspace | None:
        return self.workspaces.get((namespace, name))

    async def list_workspaces(self, namespace: str | None = None) -> list[Workspace]:
        return [w for k, w in sorted(self.workspaces.items())
                if namespace is None or k[0] == namespace]

    async def request_delete(self, namespace: str, name: str, *, purge: bool = False) -> bool:
        ws = self.workspaces.get((namespace, name))
        if ws is None:
            return False
        meta = ws.metadata
        if meta.deletion_timestamp is None:
            meta = meta.model_copy(update={"deletion_timestamp": self.clock()})
        if purge:
            meta = meta.model_copy(update={"annotations": {**meta.annotations,
                                                           PURGE_ANNOTATION: "true"}})
        self.workspaces[(namespace, name)] = ws.model_copy(update={"metadata": meta})
        return True

    async def suspend(self, workspace_id: str, reason: str) -> bool:
        self.calls.append(("store.suspend", workspace_id, reason))
        if workspace_id in self.suspensions:
            return False
        self.suspensions[workspace_id] = reason
        return True

    async def resume(self, workspace_id: str) -> bool:
        self.calls.append(("store.resume", workspace_id))
        return self.suspensions.pop(workspace_id, None) is not None

    async def purge_workspace(self, namespace: str, name: str) -> bool:
        """Only a workspace marked for deletion is purged, with its tokens and registration."""
        self.calls.append(("store.purge_workspace", namespace, name))
        ws = self.workspaces.get((namespace, name))
        if ws is None or ws.metadata.deletion_timestamp is None:
            return False
        del self.workspaces[(namespace, name)]
        workspace_id = WorkspaceKey(namespace, name).id
        self.tokens = [t for t in self.tokens if t.workspace_id != workspace_id]
        self.registrations.pop(workspace_id, None)
        return True

    async def write_status(self, namespace: str, name: str, status: WorkspaceStatus) -> bool:
        ws = self.workspaces.get((namespace, name))
        if ws is None:
            return False
        self.workspaces[(namespace, name)] = ws.model_copy(update={"status": status})
        return True

    # ------------------------------------------------------------ tokens

    async def insert_token(self, workspace_id: str, generation: int, token_hash: str,
                           container_id: str | None = None, *,
                           expires_at: datetime | None = None,
                           revoke_others: bool = True) -> TokenRecord:
        """Only a sha256 hex is accepted; one row per (workspace, generation) and per
        hash; at most one live token per workspace (others revoked by default)."""
        self.calls.append(("store.insert_token", workspace_id, generation, container_id))
        if not _SHA256_HEX.match(token_hash):
            raise ValueError("token_hash must be the sha256 hex digest of the token")
        if any((t.workspace_id, t.generation) == (workspace_id, generation)
               or t.token_hash == token_hash for t in self.tokens):
            raise ConflictError(f"token for {workspace_id} generation {generation}")
        now = self.clock()
        if revoke_others:
            self._revoke_llm(workspace_id, generation)
            self.tokens = [replace(t, revoked_at=now) if t.workspace_id == workspace_id
                           and t.revoked_at is None and t.generation != generation else t
                           for t in self.tokens]
        elif any(t.workspace_id == workspace_id and t.revoked_at is None for t in self.tokens):
            raise ConflictError(f"{workspace_id} already has a live token")
        record = TokenRecord(workspace_id, generation, token_hash, container_id, now, None,
                             expires_at)
        self.tokens.append(record)
        self.token_inserted.set()
        return record

    async def rotate_token(self, workspace_id: str, generation: int, token_hash: str, *,
                           expires_at: datetime | None) -> TokenRecord:
        """As the real store: the current row of `generation` is superseded (still
        valid until its expiry) and a row with the next rotation becomes current."""
        self.calls.append(("store.rotate_token", workspace_id, generation))
        if not _SHA256_HEX.match(token_hash):
            raise ValueError("token_hash must be the sha256 hex digest of the token")
        now = self.clock()
        for i, t in enumerate(self.tokens):
            if (t.workspace_id, t.generation) == (workspace_id, generation) \
                    and t.revoked_at is None and t.superseded_at is None:
                self.tokens[i] = replace(t, superseded_at=now)
                record = replace(t, token_hash=token_hash, created_at=now, expires_at=expires_at,
                                 rotation=t.rotation + 1, superseded_at=None)
                self.tokens.append(record)
                return record
        raise ConflictError(f"token for {workspace_id} generation {generation}: not current")

    async def put_llm_credential(self, workspace_id: str, generation: int,
                                 credential_hash: str, provider: str,
                                 base_url: str | None) -> LlmCredentialRecord:
        """As the real store: one row per (workspace, generation), a retry replaces it."""
        self.calls.append(("store.put_llm_credential", workspace_id, generation))
        if not _SHA256_HEX.match(credential_hash):
            raise ValueError("credential_hash must be the sha256 hex digest")
        record = LlmCredentialRecord(workspace_id, generation, provider, base_url,
                                     self.clock(), None)
        self.llm_credentials[credential_hash] = record
        for other, row in list(self.llm_credentials.items()):
            if other != credential_hash and (row.workspace_id, row.generation) \
                    == (workspace_id, generation):
                del self.llm_credentials[other]
        return record

    async def find_llm_credential(self, credential_hash: str) -> LlmCredentialRecord | None:
        return self.llm_credentials.get(credential_hash)

    def _revoke_llm(self, workspace_id: str, except_generation: int | None) -> None:
        now = self.clock()
        for digest, row in self.llm_credentials.items():
            if row.workspace_id == workspace_id and row.revoked_at is None \
                    and row.generation != except_generation:
                self.llm_credentials[digest] = replace(row, revoked_at=now)

    async def revoke_tokens(self, workspace_id: str,
                            except_generation: int | None = None) -> int:
        self.calls.append(("store.revoke_tokens", workspace_id))
        self._revoke_llm(workspace_id, except_generation)
        now = self.clock()
        count = 0
        for i, t in enumerate(self.tokens):
            if t.workspace_id == workspace_id and t.revoked_at is None \
                    and t.generation != except_generation:
                self.tokens[i] = replace(t, revoked_at=now)
                count += 1
        return count

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        """Live or revoked (so the registry can tell stale from invalid)."""
        return next((t for t in self.tokens if t.token_hash == token_hash), None)

    async def live_token(self, workspace_id: str) -> TokenRecord | None:
        return next((t for t in self.tokens if t.workspace_id == workspace_id
                     and t.revoked_at is None and t.superseded_at is None), None)

    # ------------------------------------------------------------ registry

    def registration(self, workspace_id: str) -> Registration:
        return self.registrations.get(workspace_id) or _empty_registration(workspace_id)

    async def get_registration(self, workspace_id: str) -> Registration | None:
        return self.registrations.get(workspace_id)

    async def record_register(self, workspace_id: str, url: str, agent_card: Mapping[str, Any],
                              token_generation: int, *,
                              at: datetime | None = None) -> Registration:
        """Clears the register-failure marker, and an auth-failure marker not newer
        than this register; a new token generation also clears the heartbeat fields."""
        at = at or self.clock()
        r = self.registration(workspace_id)
        auth_old = r.auth_failure_at is not None and r.auth_failure_at <= at
        new_generation = r.token_generation != token_generation
        r = replace(r, url=url, agent_card=dict(agent_card), token_generation=token_generation,
                    registered_at=at, register_failure=None)
        if auth_old:
            r = replace(r, auth_failure_at=None, auth_failure_class=None,
                        auth_failure_generation=None)
        if new_generation:
            r = replace(r, heartbeat_generation=None, last_heartbeat_at=None,
                        heartbeat_status=None, heartbeat_error_detail=None, active_tasks=None,
                        uptime_seconds=None)
        self.registrations[workspace_id] = r
        return r

    async def record_register_failure(self, workspace_id: str, cls: str, message: str, *,
                                      at: datetime | None = None) -> Registration:
        at = at or self.clock()
        r = replace(self.registration(workspace_id),
                    register_failure=RegisterFailure(at=at, class_=cls, message=message))
        self.registrations[workspace_id] = r
        return r

    async def record_heartbeat(self, workspace_id: str, status: str, *,
                               error_detail: str | None = None,
                               active_tasks: int | None = None,
                               uptime_seconds: float | None = None,
                               at: datetime | None = None,
                               generation: int | None = None) -> Registration:
        """An out-of-order (older) beat changes nothing; a healthy beat newer than the
        register-failure marker clears it. active_tasks is an int4 >= 0 (CHECK)."""
        if active_tasks is not None and not 0 <= active_tasks <= INT4_MAX:
            raise ValueError(f"active_tasks {active_tasks} violates the column's range/CHECK")
        at = at or self.clock()
        r = self.registration(workspace_id)
        if r.last_heartbeat_at is None or at >= r.last_heartbeat_at:
            r = replace(r, heartbeat_generation=generation, last_heartbeat_at=at,
                        heartbeat_status=status, heartbeat_error_detail=error_detail,
                        active_tasks=active_tasks, uptime_seconds=uptime_seconds)
        marker = r.register_failure
        if status == HEALTHY and marker is not None and at > marker.at:
            r = replace(r, register_failure=None)
        self.registrations[workspace_id] = r
        return r

    async def record_auth_failure(self, workspace_id: str, cls: str, generation: int | None, *,
                                  at: datetime | None = None) -> None:
        """Only for workspaces that exist (the id comes from an unauthenticated request)."""
        try:
            key = WorkspaceKey.from_id(workspace_id)
        except ValueError:
            return
        if (key.namespace, key.name) not in self.workspaces:
            return
        self.registrations[workspace_id] = replace(
            self.registration(workspace_id), auth_failure_at=at or self.clock(),
            auth_failure_class=cls, auth_failure_generation=generation)

    # ------------------------------------------------------------ history

    async def add_event(self, workspace_id: str, type_: Any, reason: str, message: str = "",
                        *, at: datetime | None = None) -> None:
        if type_ not in ("Normal", "Warning"):
            raise ValueError(f"event type must be Normal or Warning, not {type_!r}")
        self.calls.append(("store.add_event", workspace_id, type_, reason))
        self.events.append((workspace_id, type_, reason, message))

    async def list_events(self, workspace_id: str, limit: int = 50) -> list[Any]:
        return [e for e in reversed(self.events) if e[0] == workspace_id][:limit]

    async def recent_events(self, namespace: str | None = None,
                            workspace_id: str | None = None, *,
                            after: datetime | None = None, limit: int = 100) -> list[Any]:
        """As the store's, over the (workspace_id, type, reason, message) tuples: each
        one event of count 1, recorded at its position's second of 2026-01-01."""
        start = datetime(2026, 1, 1, tzinfo=UTC)
        records = [SimpleNamespace(id=i + 1, workspace_id=w, type=t, reason=r, message=m,
                                   count=1, at=start + timedelta(seconds=i),
                                   first_at=start + timedelta(seconds=i))
                   for i, (w, t, r, m) in enumerate(self.events)]
        return [e for e in records
                if (namespace is None or e.workspace_id.startswith(f"{namespace}."))
                and (workspace_id is None or e.workspace_id == workspace_id)
                and (after is None or e.at > after)][-limit:]

    async def add_diagnostics(self, workspace_id: str, *, container_id: str | None, reason: str,
                              state: Mapping[str, Any] | None = None,
                              exit_code: int | None = None, oom_killed: bool | None = None,
                              log_tail: str | None = None,
                              env_names: Mapping[str, Any] | None = None,
                              captured_at: datetime | None = None) -> int:
        names = dict(env_names or {})
        if any(v not in ("set", "unset") for v in names.values()):
            raise ValueError("env_names values must be 'set' or 'unset'")
        self.calls.append(("store.add_diagnostics", workspace_id, container_id, reason))
        self.diagnostics.append({"workspace_id": workspace_id, "container_id": container_id,
                                 "reason": reason, "exit_code": exit_code,
                                 "env_names": names, "log_tail": log_tail})
        return len(self.diagnostics)

    async def latest_diagnostics(self, workspace_id: str) -> Any:
        mine = [d for d in self.diagnostics if d["workspace_id"] == workspace_id]
        return mine[-1] if mine else None

    async def append_activity(self, workspace_id: str, source: str, *,
                              method: str | None = None, request: Any = None,
                              response: Any = None, status: str | None = None,
                              error: str | None = None) -> int:
        self.activity.append({"workspace_id": workspace_id, "source": source, "method": method,
                              "request": request, "response": response, "status": status,
                              "error": error})
        return len(self.activity)

    async def llm_usage(self, workspace_id: str | None = None, *, since: Any = None,
                        limit: int = 1000) -> list[Any]:
        return []

    async def llm_tokens_on(self, workspace_id: str, day: Any) -> int:
        return 0

    async def list_activity(self, workspace_id: str, limit: int = 50) -> list[Any]:
        return [a for a in reversed(self.activity) if a["workspace_id"] == workspace_id][:limit]


@dataclass
class FakeEngine:
    """Containers by id; `fail_on` names an engine method that raises `failure`."""

    calls: list[Call] = field(default_factory=list)
    containers: dict[str, ContainerSpec] = field(default_factory=dict)
    token_files: dict[str, str] = field(default_factory=dict)
    a2a_credentials: dict[str, str] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)
    engine_outages: tuple[tuple[datetime, datetime], ...] = ()
    """Ids that exist before the test (diagnostics find them)."""
    fail_on: str | None = None
    failure: Exception = field(default_factory=lambda: RuntimeError("engine says no"))
    diagnostics_log_tail: str = "last line\n"
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)
    """Volume name -> labels."""

    def _call(self, *call: Any) -> None:
        self.calls.append(("engine." + call[0], *call[1:]))
        if self.fail_on == call[0]:
            raise self.failure

    async def list_containers(self, workspace_id: str | None = None) -> list[ObservedContainer]:
        self._call("list_containers")
        return []

    async def create(self, spec: ContainerSpec, host_gateway: str) -> str:
        self._call("create", spec.name, host_gateway)
        container_id = f"id-{spec.name}"
        self.containers[container_id] = spec
        return container_id

    async def put_token(self, container: str, token: str, *,
                        a2a_credential: str | None = None) -> None:
        self._call("put_token", container)
        if a2a_credential is not None:
            self.a2a_credentials[container] = a2a_credential
        self.token_files[container] = token

    async def start(self, container: str) -> None:
        self._call("start", container)

    async def stop(self, container: str, grace_seconds: int) -> None:
        self._call("stop", container, grace_seconds)

    async def remove(self, container: str) -> None:
        self._call("remove", container)

    async def ensure_volume(self, volume: VolumeSpec) -> dict[str, str] | None:
        self._call("ensure_volume", volume.name)
        found = self.volumes.get(volume.name)
        if found is None:
            self.volumes[volume.name] = dict(volume.labels)
        return None if found is None else dict(found)

    async def remove_volume(self, name: str) -> None:
        self._call("remove_volume", name)
        self.volumes.pop(name, None)

    def outages(self) -> tuple[tuple[datetime, datetime], ...]:
        return self.engine_outages

    async def diagnostics(self, container_id: str, tail: int = 50
                          ) -> ContainerDiagnostics | None:
        self._call("diagnostics", container_id)
        return ContainerDiagnostics(
            container_id, state={"Status": "exited"}, exit_code=1, oom_killed=False,
            log_tail=self.diagnostics_log_tail,
            env_names={"ANTHROPIC_AUTH_TOKEN": "set"}) \
            if container_id in self.known else None
