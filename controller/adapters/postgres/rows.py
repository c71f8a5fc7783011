"""The records the store returns, and their mapping from database rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from controller.core.model import (
    ObjectMeta,
    RegisterFailure,
    Workspace,
    WorkspaceSpec,
    WorkspaceStatus,
)
from controller.core.observed import AuthFailure, ObservedAgent

SourceKind = Literal["workspace", "system", "user", "webhook", "other"]
EventType = Literal["Normal", "Warning"]
EnvState = Literal["set", "unset"]


@dataclass(frozen=True)
class TokenRecord:
    workspace_id: str
    generation: int
    token_hash: str
    container_id: str | None
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None
    rotation: int = 0
    """Refreshes of this generation's token before this one (0: the first)."""
    superseded_at: datetime | None = None
    """When a refresh replaced it; it stays valid until `expires_at`."""

    @property
    def live(self) -> bool:
        """Not revoked (expiry is checked separately with `usable`)."""
        return self.revoked_at is None

    def usable(self, now: datetime) -> bool:
        return self.live and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class Registration:
    workspace_id: str
    url: str | None
    agent_card: dict[str, Any] | None
    token_generation: int | None
    registered_at: datetime | None
    last_heartbeat_at: datetime | None
    heartbeat_status: str | None
    heartbeat_error_detail: str | None
    active_tasks: int | None
    uptime_seconds: float | None
    register_failure: RegisterFailure | None
    heartbeat_generation: int | None = None
    """Token generation the last heartbeat was authenticated with."""
    auth_failure_at: datetime | None = None
    """Last rejected (401) agent request naming this workspace, if any."""
    auth_failure_class: str | None = None
    auth_failure_generation: int | None = None


@dataclass(frozen=True)
class ActivityRecord:
    id: int
    workspace_id: str
    at: datetime
    source_id: uuid.UUID | None
    source_kind: SourceKind
    source: str
    method: str | None
    request: Any
    response: Any
    status: str | None
    error: str | None


@dataclass(frozen=True)
class DiagnosticsRecord:
    id: int
    workspace_id: str
    container_id: str | None
    captured_at: datetime
    reason: str
    state: dict[str, Any] | None
    exit_code: int | None
    oom_killed: bool | None
    log_tail: str | None
    env_names: dict[str, EnvState]


@dataclass(frozen=True)
class EventRecord:
    id: int
    workspace_id: str
    at: datetime
    first_at: datetime
    count: int
    type: EventType
    reason: str
    message: str


# ------------------------------------------------------------------ row mappers


def _workspace(row: asyncpg.Record) -> Workspace:
    metadata = ObjectMeta(
        name=row["name"],
        namespace=row["namespace"],
        labels=row["labels"],
        annotations=row["annotations"],
        generation=row["generation"],
        uid=str(row["uid"]),
        resource_version=str(row["resource_version"]),
        creation_timestamp=row["created_at"],
        deletion_timestamp=row["deleted_at"],
    )
    status = row["status"]
    return Workspace(
        metadata=metadata,
        spec=WorkspaceSpec.model_validate(row["spec"]),
        status=None if status is None else WorkspaceStatus.model_validate(status),
    )


def _token(row: asyncpg.Record) -> TokenRecord:
    return TokenRecord(
        workspace_id=row["workspace_id"],
        generation=row["generation"],
        token_hash=row["token_hash"],
        container_id=row["container_id"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        expires_at=row["expires_at"],
        rotation=row["rotation"],
        superseded_at=row["superseded_at"],
    )


def _registration(row: asyncpg.Record) -> Registration:
    failure = None
    if row["register_failure_at"] is not None:
        failure = RegisterFailure.model_validate({
            "at": row["register_failure_at"],
            "class": row["register_failure_class"],
            "message": row["register_failure_message"] or "",
        })
    return Registration(
        workspace_id=row["workspace_id"],
        url=row["url"],
        agent_card=row["agent_card"],
        token_generation=row["token_generation"],
        registered_at=row["registered_at"],
        last_heartbeat_at=row["last_heartbeat_at"],
        heartbeat_status=row["heartbeat_status"],
        heartbeat_error_detail=row["heartbeat_error_detail"],
        active_tasks=row["active_tasks"],
        uptime_seconds=row["uptime_seconds"],
        register_failure=failure,
        heartbeat_generation=row["heartbeat_generation"],
        auth_failure_at=row["auth_failure_at"],
        auth_failure_class=row["auth_failure_class"],
        auth_failure_generation=row["auth_failure_generation"],
    )


def _activity(row: asyncpg.Record) -> ActivityRecord:
    return ActivityRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        at=row["at"],
        source_id=row["source_id"],
        source_kind=row["source_kind"],
        source=row["source"],
        method=row["method"],
        request=row["request"],
        response=row["response"],
        status=row["status"],
        error=row["error"],
    )


def _diagnostics(row: asyncpg.Record) -> DiagnosticsRecord:
    return DiagnosticsRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        container_id=row["container_id"],
        captured_at=row["captured_at"],
        reason=row["reason"],
        state=row["state"],
        exit_code=row["exit_code"],
        oom_killed=row["oom_killed"],
        log_tail=row["log_tail"],
        env_names=row["env_names"],
    )


def _event(row: asyncpg.Record) -> EventRecord:
    return EventRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        at=row["at"],
        first_at=row["first_at"],
        count=row["count"],
        type=row["type"],
        reason=row["reason"],
        message=row["message"],
    )


def observed_agent(registration: Registration | None) -> ObservedAgent:
    """What the planner needs of a registrations row."""
    if registration is None:
        return ObservedAgent()
    r = registration
    auth = None if r.auth_failure_at is None or r.auth_failure_class is None else AuthFailure(
        r.auth_failure_at, r.auth_failure_class, r.auth_failure_generation)
    return ObservedAgent(
        registered_at=r.registered_at, registered_generation=r.token_generation,
        last_heartbeat_at=r.last_heartbeat_at, heartbeat_generation=r.heartbeat_generation,
        heartbeat_status=r.heartbeat_status, heartbeat_error=r.heartbeat_error_detail,
        register_failure=r.register_failure, last_auth_failure=auth,
        active_tasks=r.active_tasks)
