"""History kept after a workspace is purged: activity, diagnostics and events.

Activity is what callers did, diagnostics what a dead container looked like
(and so how often it crashed), events what the controller reported.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controller.adapters.postgres.base import _clean_opt, _translated, clean_json, clean_text
from controller.adapters.postgres.rows import (
    ActivityRecord,
    DiagnosticsRecord,
    EnvState,
    EventRecord,
    EventType,
    SourceKind,
    _activity,
    _diagnostics,
    _event,
)
from controller.core.ops import RecreateReason

if TYPE_CHECKING:
    from controller.adapters.postgres.base import _Pool

# Diagnostics reasons that mean "the container died on its own", or its agent hung or
# never came up (replaced for silence): all count toward the crash-loop back-off.
CRASH_REASONS: tuple[str, ...] = (
    RecreateReason.CONTAINER_EXITED.value, RecreateReason.OOM_KILLED.value,
    RecreateReason.LIVENESS_FAILED.value, RecreateReason.STARTUP_TIMEOUT.value)
# Recreates for a new config (spec change, restart, resume): crashes before one do not
# count against the new config, as a new Pod template starts a fresh back-off.
CRASH_RESET_REASONS: tuple[str, ...] = (
    RecreateReason.CONFIG_CHANGED.value, RecreateReason.RESTART_REQUESTED.value,
    RecreateReason.RESUMED.value)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def classify_source(source: str) -> tuple[uuid.UUID | None, SourceKind]:
    """Caller string -> (source_id, source_kind). Never raises.

    A canonical UUID is a workspace (source_id set); `system:*`, `webhook:*` and
    `user` are synthetic callers; anything else is 'other'. Only UUIDs get a
    source_id, so no caller string can fail the insert.
    """
    if _UUID.match(source):
        return uuid.UUID(source), "workspace"
    if source.startswith("system:"):
        return None, "system"
    if source.startswith("webhook:"):
        return None, "webhook"
    if source == "user":
        return None, "user"
    return None, "other"


class HistoryMixin:
    """`Store` methods over the activity, diagnostics and events tables."""

    _pool: _Pool
    on_event: Callable[[str], None] | None = None
    """Called with the workspace's id after each event is recorded (in this process):
    the events watches' wake-up (`wsctl events -w`)."""

    # -------------------------------------------------------------- activity

    @_translated
    async def append_activity(
        self,
        workspace_id: str,
        source: str,
        *,
        method: str | None = None,
        request: Any = None,
        response: Any = None,
        status: str | None = None,
        error: str | None = None,
        at: datetime | None = None,
    ) -> int:
        """Append one activity row; returns its id.

        `source` is the raw caller: a UUID is stored in source_id with kind
        'workspace'; any other string (`system:*`, `webhook:*`, `user`, or
        garbage) is stored as-is with a NULL source_id (see `classify_source`).
        Text and JSON are cleaned of what PostgreSQL rejects (NUL, lone
        surrogates), so the caller string can never fail the insert.
        """
        source_id, kind = classify_source(source)
        value = await self._pool.fetchval(
            """
            INSERT INTO activity (workspace_id, at, source_id, source_kind, source, method,
                                  request, response, status, error)
            VALUES ($1, coalesce($2, now()), $3, $4, $5, $6, $7, $8, $9, $10)
            RETURNING id
            """,
            clean_text(workspace_id), at, source_id, kind, clean_text(source),
            _clean_opt(method), clean_json(request), clean_json(response), _clean_opt(status),
            _clean_opt(error),
        )
        return int(value)

    @_translated
    async def list_activity(self, workspace_id: str, limit: int = 50) -> list[ActivityRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM activity WHERE workspace_id = $1 ORDER BY id DESC LIMIT $2",
            workspace_id, limit,
        )
        return [_activity(r) for r in rows]

    # -------------------------------------------------------------- diagnostics

    @_translated
    async def add_diagnostics(
        self,
        workspace_id: str,
        *,
        container_id: str | None,
        reason: str,
        state: Mapping[str, Any] | None = None,
        exit_code: int | None = None,
        oom_killed: bool | None = None,
        log_tail: str | None = None,
        env_names: Mapping[str, EnvState] | None = None,
        captured_at: datetime | None = None,
    ) -> int:
        """Store diagnostics of one container; returns the row id.

        `env_names` maps variable names to 'set' or 'unset' (never values);
        anything else is a ValueError (and a CHECK violation in the database).
        """
        names = dict(env_names or {})
        bad = sorted(n for n, v in names.items() if v not in ("set", "unset"))
        if bad:
            raise ValueError(f"env_names values must be 'set' or 'unset' (not for {bad})")
        value = await self._pool.fetchval(
            """
            INSERT INTO diagnostics (workspace_id, container_id, captured_at, reason, state,
                                     exit_code, oom_killed, log_tail, env_names)
            VALUES ($1, $2, coalesce($3, now()), $4, $5, $6, $7, $8, $9)
            RETURNING id
            """,
            workspace_id, container_id, captured_at, clean_text(reason),
            None if state is None else clean_json(state), exit_code, oom_killed,
            _clean_opt(log_tail), clean_json(names),
        )
        return int(value)

    @_translated
    async def crash_stats(
        self, workspace_id: str, since: datetime, reasons: Sequence[str] = CRASH_REASONS
    ) -> tuple[int, datetime | None]:
        """(number, latest time) of crash diagnostics captured at or after `since`.

        A crash is a diagnostics row whose reason is one of `reasons` (by default
        the recreate reasons for a container that exited or was OOM-killed); a
        container captured twice (a recreate interrupted and redone) is one crash,
        at its first capture. Crashes before the last recreate for a new config
        (`CRASH_RESET_REASONS`) are not counted.
        """
        row = await self._pool.fetchrow(
            "SELECT count(*) AS n, max(first_at) AS last FROM ("
            " SELECT min(captured_at) AS first_at FROM diagnostics"
            " WHERE workspace_id = $1 AND captured_at >= $2 AND reason = ANY($3::text[])"
            " AND captured_at > coalesce((SELECT max(captured_at) FROM diagnostics"
            "  WHERE workspace_id = $1 AND reason = ANY($4::text[])), '-infinity')"
            " GROUP BY coalesce(container_id, id::text)) c",
            workspace_id, since, list(reasons), list(CRASH_RESET_REASONS),
        )
        assert row is not None
        return int(row["n"]), row["last"]

    @_translated
    async def latest_diagnostics(self, workspace_id: str) -> DiagnosticsRecord | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM diagnostics WHERE workspace_id = $1 "
            "ORDER BY captured_at DESC, id DESC LIMIT 1",
            workspace_id,
        )
        return None if row is None else _diagnostics(row)

    # -------------------------------------------------------------- events

    @_translated
    async def add_event(
        self,
        workspace_id: str,
        type_: EventType,
        reason: str,
        message: str = "",
        *,
        at: datetime | None = None,
    ) -> EventRecord:
        """Record an event. A repeat of the workspace's latest event (same type,
        reason and message) increments its `count` and moves `at` instead."""
        if type_ not in ("Normal", "Warning"):
            raise ValueError(f"event type must be Normal or Warning, not {type_!r}")
        message = clean_text(message)
        reason = clean_text(reason)
        # One round trip: migration 0005's function (0006: safe against a retention
        # pass deleting the latest event meanwhile) takes a per-workspace advisory
        # lock, then folds a repeat of the latest event or inserts a new one.
        row = await self._pool.fetchrow(
            "SELECT * FROM wsctl_add_event($1, $2, $3, $4, $5)",
            workspace_id, at, type_, reason, message,
        )
        assert row is not None
        if self.on_event is not None:
            self.on_event(workspace_id)
        return _event(row)

    @_translated
    async def recent_events(
        self,
        namespace: str | None = None,
        workspace_id: str | None = None,
        *,
        after: datetime | None = None,
        limit: int = 100,
    ) -> list[EventRecord]:
        """Events of one workspace, of a namespace, or of all (both None), oldest first:
        the newest `limit` of them, or of those whose time is later than `after` (a
        repeat moves an event's time, so a folded repeat is among them again)."""
        rows = await self._pool.fetch(
            "SELECT * FROM (SELECT * FROM events"
            " WHERE ($1::text IS NULL OR starts_with(workspace_id, $1 || '.'))"
            " AND ($2::text IS NULL OR workspace_id = $2)"
            " AND ($3::timestamptz IS NULL OR at > $3)"
            " ORDER BY at DESC, id DESC LIMIT $4) e ORDER BY at, id",
            namespace, workspace_id, after, limit,
        )
        return [_event(r) for r in rows]

    @_translated
    async def list_events(self, workspace_id: str, limit: int = 50) -> list[EventRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM events WHERE workspace_id = $1 ORDER BY id DESC LIMIT $2",
            workspace_id, limit,
        )
        return [_event(r) for r in rows]
