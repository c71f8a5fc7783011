"""What an apply would do, without doing it (`POST /api/v1/workspaces?dryRun=true`,
`wsctl diff`, `wsctl apply --dry-run=server`): the spec and label changes, and
whether the reconcile would create, replace or keep the container, and why. The
same projection the reconcile makes (secrets resolved as it would resolve them;
their values enter only as digests and are never shown)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from controller.core.diff import field_changes, recreate_reasons
from controller.core.model import Workspace
from controller.core.projection import ProjectionError, config_material, llm_grant, project_env
from controller.core.settings import PlatformSettings

SecretsOf = Callable[[Workspace], Awaitable[dict[tuple[str, str], str]]]


def _wire(ws: Workspace) -> dict[str, Any]:
    dumped: dict[str, Any] = ws.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


async def _material(ws: Workspace, secrets_of: SecretsOf,
                    settings: PlatformSettings) -> dict[str, Any] | str:
    try:
        env = project_env(ws, await secrets_of(ws), settings)
    except ProjectionError as exc:
        return f"cannot be projected: {exc}"
    return config_material(ws, env, llm_grant(ws))


async def preview(current: Workspace | None, wanted: Workspace, secrets_of: SecretsOf,
                  settings: PlatformSettings) -> dict[str, Any]:
    key = str(wanted.key)
    if current is None:
        return {"workspace": key, "result": "created", "changes": [],
                "container": "create", "why": []}
    before, after = _wire(current), _wire(wanted)
    changes = field_changes(before.get("spec"), after.get("spec")) + field_changes(
        (before.get("metadata") or {}).get("labels") or {},
        (after.get("metadata") or {}).get("labels") or {}, "metadata.labels")
    old = await _material(current, secrets_of, settings)
    new = await _material(wanted, secrets_of, settings)
    if isinstance(new, str):
        container, why = "cannot", [new]
    elif isinstance(old, str):
        container, why = "recreate", ["the current spec " + old]
    else:
        why = recreate_reasons(old, new)
        container = "recreate" if why else "keep"
    return {"workspace": key, "result": "configured" if changes else "unchanged",
            "changes": [c.line() for c in changes], "container": container, "why": why}
