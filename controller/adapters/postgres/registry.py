"""The registrations table: agent register, heartbeats, failure markers.

`observe_registry` is the reconciler's one-statement read of a workspace's
registry side (registration, live token, crashes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controller.adapters.postgres.base import _clean_opt, _translated, clean_json, clean_text
from controller.adapters.postgres.history import CRASH_REASONS, CRASH_RESET_REASONS
from controller.adapters.postgres.rows import Registration, _registration, observed_agent
from controller.core.observed import HEALTHY, Observed, ObservedTokens

if TYPE_CHECKING:
    from controller.adapters.postgres.base import _Pool

# The heartbeat status that clears a register-failure marker.


class RegistryMixin:
    """`Store` methods over the registrations table."""

    _pool: _Pool

    @_translated
    async def record_register(
        self,
        workspace_id: str,
        url: str,
        agent_card: Mapping[str, Any],
        token_generation: int,
        *,
        at: datetime | None = None,
    ) -> Registration:
        """A successful register: stores the registration and clears the failure
        marker (and an auth-failure marker older than this register). A register
        for another token generation (a new container) also clears the heartbeat
        fields, which described the old container."""
        row = await self._pool.fetchrow(
            """
            INSERT INTO registrations AS r (workspace_id, url, agent_card, token_generation,
                                            registered_at)
            VALUES ($1, $2, $3, $4, coalesce($5, now()))
            ON CONFLICT (workspace_id) DO UPDATE SET
                url = EXCLUDED.url,
                agent_card = EXCLUDED.agent_card,
                token_generation = EXCLUDED.token_generation,
                registered_at = EXCLUDED.registered_at,
                register_failure_at = NULL,
                register_failure_class = NULL,
                register_failure_message = NULL,
                auth_failure_at = CASE WHEN r.auth_failure_at <= EXCLUDED.registered_at
                    THEN NULL ELSE r.auth_failure_at END,
                auth_failure_class = CASE WHEN r.auth_failure_at <= EXCLUDED.registered_at
                    THEN NULL ELSE r.auth_failure_class END,
                auth_failure_generation = CASE WHEN r.auth_failure_at <= EXCLUDED.registered_at
                    THEN NULL ELSE r.auth_failure_generation END,
                heartbeat_generation = CASE WHEN r.token_generation IS DISTINCT FROM
                    EXCLUDED.token_generation THEN NULL ELSE r.heartbeat_generation END,
                last_heartbeat_at = CASE WHEN r.token_generation IS DISTINCT FROM
                    EXCLUDED.token_generation THEN NULL ELSE r.last_heartbeat_at END,
                heartbeat_status = CASE WHEN r.token_generation IS DISTINCT FROM
                    EXCLUDED.token_generation THEN NULL ELSE r.heartbeat_status END,
                heartbeat_error_detail = CASE WHEN r.token_generation IS DISTINCT FROM
                    EXCLUDED.token_generation THEN NULL ELSE r.heartbeat_error_detail END,
                active_tasks = CASE WHEN r.token_generation IS DISTINCT FROM
                    EXCLUDED.token_generation THEN NULL ELSE r.active_tasks END,
                uptime_seconds = CASE WHEN r.token_generation IS DISTINCT FROM
                    EXCLUDED.token_generation THEN NULL ELSE r.uptime_seconds END
            RETURNING *
            """,
            workspace_id, clean_text(url), clean_json(agent_card), token_generation, at,
        )
        assert row is not None
        return _registration(row)

    @_translated
    async def record_register_failure(
        self, workspace_id: str, cls: str, message: str, *, at: datetime | None = None
    ) -> Registration:
        """Set the register-failure marker (class such as `blocked_private_url`)."""
        row = await self._pool.fetchrow(
            """
            INSERT INTO registrations AS r (workspace_id, register_failure_at,
                                            register_failure_class, register_failure_message)
            VALUES ($1, coalesce($2, now()), $3, $4)
            ON CONFLICT (workspace_id) DO UPDATE SET
                register_failure_at = EXCLUDED.register_failure_at,
                register_failure_class = EXCLUDED.register_failure_class,
                register_failure_message = EXCLUDED.register_failure_message
            RETURNING *
            """,
            workspace_id, at, clean_text(cls), clean_text(message),
        )
        assert row is not None
        return _registration(row)

    @_translated
    async def record_heartbeat(
        self,
        workspace_id: str,
        status: str,
        *,
        error_detail: str | None = None,
        active_tasks: int | None = None,
        uptime_seconds: float | None = None,
        at: datetime | None = None,
        generation: int | None = None,
    ) -> Registration:
        """Record a heartbeat, atomically clearing the register-failure marker
        when `status` is 'healthy' and the heartbeat is newer than the marker.
        `generation` is the token generation the heartbeat authenticated with.

        A heartbeat older than the last recorded one (delivered out of order)
        changes nothing.
        """
        row = await self._pool.fetchrow(
            """
            INSERT INTO registrations AS r (workspace_id, last_heartbeat_at, heartbeat_status,
                                            heartbeat_error_detail, active_tasks,
                                            uptime_seconds, heartbeat_generation)
            VALUES ($1, coalesce($2, now()), $3, $4, $5, $6, $8)
            ON CONFLICT (workspace_id) DO UPDATE SET
                heartbeat_generation = CASE WHEN EXCLUDED.last_heartbeat_at
                        >= coalesce(r.last_heartbeat_at, '-infinity')
                    THEN EXCLUDED.heartbeat_generation ELSE r.heartbeat_generation END,
                last_heartbeat_at = CASE WHEN EXCLUDED.last_heartbeat_at
                        >= coalesce(r.last_heartbeat_at, '-infinity')
                    THEN EXCLUDED.last_heartbeat_at ELSE r.last_heartbeat_at END,
                heartbeat_status = CASE WHEN EXCLUDED.last_heartbeat_at
                        >= coalesce(r.last_heartbeat_at, '-infinity')
                    THEN EXCLUDED.heartbeat_status ELSE r.heartbeat_status END,
                heartbeat_error_detail = CASE WHEN EXCLUDED.last_heartbeat_at
                        >= coalesce(r.last_heartbeat_at, '-infinity')
                    THEN EXCLUDED.heartbeat_error_detail ELSE r.heartbeat_error_detail END,
                active_tasks = CASE WHEN EXCLUDED.last_heartbeat_at
                        >= coalesce(r.last_heartbeat_at, '-infinity')
                    THEN EXCLUDED.active_tasks ELSE r.active_tasks END,
                uptime_seconds = CASE WHEN EXCLUDED.last_heartbeat_at
                        >= coalesce(r.last_heartbeat_at, '-infinity')
                    THEN EXCLUDED.uptime_seconds ELSE r.uptime_seconds END,
                register_failure_at = CASE WHEN EXCLUDED.heartbeat_status = $7
                        AND EXCLUDED.last_heartbeat_at > r.register_failure_at
                    THEN NULL ELSE r.register_failure_at END,
                register_failure_class = CASE WHEN EXCLUDED.heartbeat_status = $7
                        AND EXCLUDED.last_heartbeat_at > r.register_failure_at
                    THEN NULL ELSE r.register_failure_class END,
                register_failure_message = CASE WHEN EXCLUDED.heartbeat_status = $7
                        AND EXCLUDED.last_heartbeat_at > r.register_failure_at
                    THEN NULL ELSE r.register_failure_message END
            RETURNING *
            """,
            workspace_id, at, clean_text(status), _clean_opt(error_detail), active_tasks,
            uptime_seconds, HEALTHY, generation,
        )
        assert row is not None
        return _registration(row)

    @_translated
    async def record_auth_failure(
        self, workspace_id: str, cls: str, generation: int | None, *, at: datetime | None = None,
        known: bool = False,
    ) -> None:
        """Mark a rejected (401) agent request naming the workspace (class such as
        `stale_token`; `generation` of the presented token when it was a known one).

        Only for workspaces that exist: the id comes from an unauthenticated
        request, and must not create rows for arbitrary strings. `known=True`:
        the caller checked that it exists (Kubernetes mode keeps desired state
        outside this database).
        """
        await self._pool.execute(
            """
            INSERT INTO registrations AS r (workspace_id, auth_failure_at, auth_failure_class,
                                            auth_failure_generation)
            SELECT $1, coalesce($2, now()), $3, $4
            WHERE $5 OR EXISTS (SELECT 1 FROM workspaces w
                                WHERE w.namespace || '.' || w.name = $1)
            ON CONFLICT (workspace_id) DO UPDATE SET
                auth_failure_at = EXCLUDED.auth_failure_at,
                auth_failure_class = EXCLUDED.auth_failure_class,
                auth_failure_generation = EXCLUDED.auth_failure_generation
            """,
            workspace_id, at, clean_text(cls), generation, known,
        )

    @_translated
    async def get_registration(self, workspace_id: str) -> Registration | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM registrations WHERE workspace_id = $1", workspace_id
        )
        return None if row is None else _registration(row)

    @_translated
    async def list_registrations(self) -> list[Registration]:
        rows = await self._pool.fetch("SELECT * FROM registrations ORDER BY workspace_id")
        return [_registration(r) for r in rows]

    @_translated
    async def observe_registry(self, workspace_id: str, crashes_since: datetime,
                               reasons: Sequence[str] = CRASH_REASONS) -> Observed:
        """The registry side of what the planner observes (agent, tokens, recent
        crashes; no containers), in one statement: one round trip instead of four."""
        row = await self._pool.fetchrow(
            """
            SELECT r.*, t.generation AS live_generation, t.expires_at AS live_expires_at,
                   t.created_at AS live_issued_at,
                   (SELECT coalesce(max(generation), 0) FROM tokens
                     WHERE workspace_id = w.wid) AS max_generation,
                   c.n AS crashes, c.last AS last_crash,
                   s.suspended_at, s.reason AS suspend_reason,
                   (SELECT a.at FROM activity a WHERE a.workspace_id = w.wid
                     ORDER BY a.id DESC LIMIT 1) AS last_activity
              FROM (SELECT $1::text AS wid) w
              LEFT JOIN registrations r ON r.workspace_id = w.wid
              LEFT JOIN suspensions s ON s.workspace_id = w.wid
              LEFT JOIN tokens t ON t.workspace_id = w.wid AND t.revoked_at IS NULL
                                    AND t.superseded_at IS NULL
             CROSS JOIN LATERAL (
                   SELECT count(*) AS n, max(first_at) AS last FROM (
                          SELECT min(d.captured_at) AS first_at FROM diagnostics d
                           WHERE d.workspace_id = w.wid AND d.captured_at >= $2
                             AND d.reason = ANY($3::text[])
                             AND d.captured_at > coalesce((
                                 SELECT max(n.captured_at) FROM diagnostics n
                                  WHERE n.workspace_id = w.wid
                                    AND n.reason = ANY($4::text[])), '-infinity')
                           GROUP BY coalesce(d.container_id, d.id::text)) x) c
            """,
            workspace_id, crashes_since, list(reasons), list(CRASH_RESET_REASONS),
        )
        assert row is not None
        return Observed(
            agent=observed_agent(None if row["workspace_id"] is None else _registration(row)),
            tokens=ObservedTokens(
                live_generation=row["live_generation"], live_expires_at=row["live_expires_at"],
                max_generation=int(row["max_generation"]),
                live_issued_at=row["live_issued_at"]),
            recent_crashes=int(row["crashes"]), last_crash_at=row["last_crash"],
            suspended_at=row["suspended_at"], suspend_reason=row["suspend_reason"],
            last_activity_at=row["last_activity"])

    @_translated
    async def suspend(self, workspace_id: str, reason: str) -> bool:
        """Mark the workspace suspended; False if it already was."""
        row = await self._pool.fetchrow(
            "INSERT INTO suspensions (workspace_id, reason) VALUES ($1, $2) "
            "ON CONFLICT (workspace_id) DO NOTHING RETURNING 1",
            workspace_id, clean_text(reason))
        return row is not None

    @_translated
    async def resume(self, workspace_id: str) -> bool:
        """Clear the suspension; False if it was not suspended."""
        row = await self._pool.fetchrow(
            "DELETE FROM suspensions WHERE workspace_id = $1 RETURNING 1", workspace_id)
        return row is not None
