"""Translation between Kubernetes objects and the model (pure): a `Workspace` custom
resource's body -> `Workspace`, `WorkspaceStatus` <-> `.status`, a Secret's data
-> values. The operator's kopf handlers only call these.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from controller.core.conditions import Verdict, apply_verdict
from controller.core.errors import WsctlError
from controller.core.model import (
    API_VERSION,
    KIND,
    Phase,
    Workspace,
    WorkspaceKey,
    WorkspaceStatus,
)

RESTARTED_AT_ANNOTATION = "wsctl.dev/restartedAt"
"""Like `kubectl rollout restart`: a newer time here than spec.restartedAt forces a recreate."""


class InvalidWorkspace(WsctlError, ValueError):
    """The custom resource does not parse as a Workspace; names the field."""


def key_of(body: Mapping[str, Any]) -> WorkspaceKey:
    meta = body.get("metadata") or {}
    return WorkspaceKey(str(meta.get("namespace") or "default"), str(meta.get("name")))


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def workspace_from_body(body: Mapping[str, Any]) -> Workspace:
    """The custom resource as the core's Workspace; raises InvalidWorkspace naming the field.

    The `wsctl.dev/restartedAt` annotation counts as spec.restartedAt when newer.
    """
    meta = dict(body.get("metadata") or {})
    keep = ("name", "namespace", "labels", "annotations", "generation", "uid",
            "resourceVersion", "creationTimestamp", "deletionTimestamp")
    metadata = {k: meta[k] for k in keep if meta.get(k) is not None}
    spec = dict(body.get("spec") or {})
    annotated = (meta.get("annotations") or {}).get(RESTARTED_AT_ANNOTATION)
    if annotated:
        try:
            when = _parse_time(str(annotated))
        except ValueError:
            raise InvalidWorkspace(f"metadata.annotations[{RESTARTED_AT_ANNOTATION}]: "
                                   f"{annotated!r} is not an RFC 3339 time") from None
        current = spec.get("restartedAt")
        try:
            newer = current is None or when > _parse_time(str(current))
        except ValueError:
            newer = False  # spec.restartedAt is reported by validation below
        if newer:
            spec["restartedAt"] = when.isoformat()
    try:
        return Workspace.model_validate(
            {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]"
                            for p in error["loc"]).replace(".[", "[")
            problems.append(f"{path}: {str(error['msg']).removeprefix('Value error, ')}")
        raise InvalidWorkspace("; ".join(problems)) from None


def status_from_body(body: Mapping[str, Any]) -> WorkspaceStatus | None:
    """The status last written, or None when absent or not ours (then start afresh)."""
    raw = body.get("status")
    if not isinstance(raw, Mapping) or not raw:
        return None
    known = {f.alias or name for name, f in WorkspaceStatus.model_fields.items()}
    try:
        return WorkspaceStatus.model_validate({k: v for k, v in raw.items() if k in known})
    except ValidationError:
        return None


def status_patch(status: WorkspaceStatus) -> dict[str, Any]:
    """A merge patch replacing the whole status: unset fields are sent as null (removed)."""
    wire: dict[str, Any] = status.model_dump(mode="json", by_alias=True)
    return wire


def invalid_status(previous: WorkspaceStatus | None, message: str, generation: int | None,
                   now: datetime) -> WorkspaceStatus:
    """Status for a custom resource the core cannot read: Failed, Degraded InvalidSpec."""
    previous = previous or WorkspaceStatus()
    verdict = Verdict(ready=("False", "InvalidSpec", message),
                      degraded=("True", "InvalidSpec", message),
                      progressing=("False", "InvalidSpec", "waiting for a valid spec"))
    return previous.model_copy(update={
        "phase": Phase.FAILED, "observed_generation": generation,
        "conditions": apply_verdict(previous.conditions, verdict, now, generation)})


def decode_secret(body: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's values (base64 `data`, and `stringData` if a server returned it)."""
    values: dict[str, str] = {}
    for key, encoded in (body.get("data") or {}).items():
        try:
            values[str(key)] = base64.b64decode(str(encoded), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            continue  # binary values cannot be env values
    for key, text in (body.get("stringData") or {}).items():
        values[str(key)] = str(text)
    return values


# ------------------------------------------------------------------ the operator
