"""The workspaces table: desired state, deletion, observed status, change feed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from controller.adapters.postgres.base import _translated
from controller.adapters.postgres.listener import WorkspaceChangeCallback, WorkspaceListener
from controller.adapters.postgres.rows import _workspace
from controller.core.errors import WorkspaceTerminatingError
from controller.core.model import (
    PURGE_ANNOTATION,
    Workspace,
    WorkspaceKey,
    WorkspaceSpec,
    WorkspaceStatus,
)

if TYPE_CHECKING:
    from controller.adapters.postgres.base import _Pool


def _spec_json(spec: WorkspaceSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def _status_json(status: WorkspaceStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


# Create or update a workspace's desired state; no row when its deletion is pending.
_UPSERT_WORKSPACE = """
    INSERT INTO workspaces AS w (namespace, name, spec, labels, annotations)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (namespace, name) DO UPDATE
        SET spec = EXCLUDED.spec,
            labels = EXCLUDED.labels,
            annotations = EXCLUDED.annotations
        WHERE w.deleted_at IS NULL
    RETURNING *
"""


def _upsert_args(ws: Workspace) -> tuple[object, ...]:
    meta = ws.metadata
    return (meta.namespace, meta.name, _spec_json(ws.spec), dict(meta.labels),
            dict(meta.annotations))


class WorkspacesMixin:
    """`Store` methods over the workspaces table."""

    _pool: _Pool
    _dsn: str
    _listener: WorkspaceListener | None

    @_translated
    async def apply_workspace(self, ws: Workspace) -> Workspace:
        """Create or update the desired state (spec, labels, annotations).

        `metadata.generation` is bumped only when the spec changes; status,
        uid and creationTimestamp are kept. Raises `WorkspaceTerminatingError`
        if the workspace's deletion was requested and is not finished.
        """
        row = await self._pool.fetchrow(_UPSERT_WORKSPACE, *_upsert_args(ws))
        if row is None:
            raise WorkspaceTerminatingError(
                f"workspace {ws.key} is being deleted; apply it again once it is gone"
            )
        return _workspace(row)

    @_translated
    async def apply_workspaces(self, workspaces: Sequence[Workspace]
                               ) -> list[tuple[int | None, Workspace]]:
        """`apply_workspace` for each, all in one transaction: all or none.

        Returns (generation before, or None if it was created; the stored
        workspace) per document. `WorkspaceTerminatingError` for the first one
        being deleted, and nothing is applied. Their NOTIFYs go out at commit.
        """
        applied: list[tuple[int | None, Workspace]] = []
        async with self._pool.acquire() as conn, conn.transaction():
            for ws in workspaces:
                meta = ws.metadata
                before = await conn.fetchval(
                    "SELECT generation FROM workspaces WHERE namespace = $1 AND name = $2 "
                    "FOR UPDATE", meta.namespace, meta.name)
                row = await conn.fetchrow(_UPSERT_WORKSPACE, *_upsert_args(ws))
                if row is None:
                    raise WorkspaceTerminatingError(
                        f"workspace {ws.key} is being deleted; nothing was applied (apply "
                        "again once it is gone)")
                applied.append((before, _workspace(row)))
        return applied

    @_translated
    async def get_workspace(self, namespace: str, name: str) -> Workspace | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM workspaces WHERE namespace = $1 AND name = $2", namespace, name
        )
        return None if row is None else _workspace(row)

    @_translated
    async def list_workspaces(self, namespace: str | None = None) -> list[Workspace]:
        """All workspaces (including those being deleted), by namespace and name."""
        rows = await self._pool.fetch(
            "SELECT * FROM workspaces WHERE $1::text IS NULL OR namespace = $1 "
            "ORDER BY namespace, name",
            namespace,
        )
        return [_workspace(r) for r in rows]

    @_translated
    async def request_delete(self, namespace: str, name: str, *, purge: bool = False) -> bool:
        """Mark the workspace for deletion (idempotent). False if it does not exist.
        `purge`: its storage volume goes too (the PURGE_ANNOTATION, set in the same
        statement, so the reconcile that deletes it sees both)."""
        row = await self._pool.fetchrow(
            "UPDATE workspaces SET deleted_at = coalesce(deleted_at, now()), "
            "annotations = CASE WHEN $3 THEN annotations || jsonb_build_object($4::text, "
            "'true') ELSE annotations END "
            "WHERE namespace = $1 AND name = $2 RETURNING 1",
            namespace, name, purge, PURGE_ANNOTATION,
        )
        return row is not None

    @_translated
    async def purge_workspace(self, namespace: str, name: str) -> bool:
        """Delete a workspace whose deletion was requested, with its tokens and
        registration. A workspace not marked for deletion is left alone (False)."""
        workspace_id = WorkspaceKey(namespace, name).id
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM workspaces WHERE namespace = $1 AND name = $2 "
                "AND deleted_at IS NOT NULL RETURNING 1",
                namespace, name,
            )
            if row is None:
                return False
            await conn.execute("DELETE FROM tokens WHERE workspace_id = $1", workspace_id)
            await conn.execute("DELETE FROM llm_credentials WHERE workspace_id = $1",
                               workspace_id)
            await conn.execute("DELETE FROM registrations WHERE workspace_id = $1", workspace_id)
            await conn.execute("DELETE FROM suspensions WHERE workspace_id = $1", workspace_id)
            return True

    @_translated
    async def forget_workspace(self, workspace_id: str) -> None:
        """Drop the tokens and registration of a workspace whose desired state lives
        elsewhere (Kubernetes mode: the Workspace object is gone); history is kept."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM tokens WHERE workspace_id = $1", workspace_id)
            await conn.execute("DELETE FROM llm_credentials WHERE workspace_id = $1",
                               workspace_id)
            await conn.execute("DELETE FROM registrations WHERE workspace_id = $1", workspace_id)
            await conn.execute("DELETE FROM suspensions WHERE workspace_id = $1", workspace_id)

    @_translated
    async def write_status(self, namespace: str, name: str, status: WorkspaceStatus) -> bool:
        """Replace the observed status; never bumps generation. False if no such workspace."""
        row = await self._pool.fetchrow(
            "UPDATE workspaces SET status = $3 WHERE namespace = $1 AND name = $2 RETURNING 1",
            namespace, name, _status_json(status),
        )
        return row is not None

    @_translated
    async def listen_workspace_changes(
        self,
        callback: WorkspaceChangeCallback,
        *,
        on_reconnect: Callable[[], None] | None = None,
    ) -> WorkspaceListener:
        """Follow desired-state changes. One `WorkspaceListener` (one connection) per
        store: a second call subscribes to the first's. Closed by `close()` of the
        listener or the store."""
        if self._listener is not None and not self._listener.closed:
            self._listener.subscribe(callback, on_reconnect)
            return self._listener
        listener = WorkspaceListener(self._dsn, callback, on_reconnect)
        await listener.start()
        self._listener = listener
        return listener
