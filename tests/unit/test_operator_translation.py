"""The operator's pure translation between Kubernetes objects and the core's model."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.core.model import WorkspaceKey, WorkspaceStatus
from controller.drivers.k8s_objects import (
    InvalidWorkspace,
    decode_secret,
    invalid_status,
    key_of,
    status_from_body,
    status_patch,
    workspace_from_body,
)


def body(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace",
        "metadata": {"name": "alice", "namespace": "team", "uid": "u-1", "generation": 4,
                     "resourceVersion": "17", "annotations": {}},
        "spec": {"llm": {"provider": "minimax",
                         "apiKey": {"secretRef": {"name": "llm", "key": "api-key"}}}},
    }
    for key, value in changes.items():
        obj[key] = {**obj[key], **value}
    return obj


def test_body_becomes_a_workspace_with_metadata() -> None:
    ws = workspace_from_body(body())
    assert ws.key == WorkspaceKey("team", "alice") == key_of(body())
    assert ws.metadata.generation == 4 and ws.metadata.uid == "u-1"
    assert ws.spec.llm is not None and ws.spec.llm.provider == "minimax"


def test_restarted_at_annotation_counts_when_newer_than_the_spec() -> None:
    annotated = body(metadata={"annotations": {"wsctl.dev/restartedAt": "2030-01-01T00:00:00Z"}},
                     spec={"restartedAt": "2029-01-01T00:00:00Z"})
    assert workspace_from_body(annotated).spec.restarted_at == datetime(2030, 1, 1, tzinfo=UTC)
    older = body(metadata={"annotations": {"wsctl.dev/restartedAt": "2020-01-01T00:00:00Z"}},
                 spec={"restartedAt": "2029-01-01T00:00:00Z"})
    assert workspace_from_body(older).spec.restarted_at == datetime(2029, 1, 1, tzinfo=UTC)


def test_malformed_annotation_and_invalid_spec_name_the_field() -> None:
    with pytest.raises(InvalidWorkspace, match=r"annotations\[wsctl.dev/restartedAt\]"):
        workspace_from_body(body(metadata={"annotations": {"wsctl.dev/restartedAt": "soon"}}))
    with pytest.raises(InvalidWorkspace, match=r"^spec\.env\[0\]\.name: "):
        workspace_from_body(body(spec={"env": [{"name": "WSCTL_X", "value": "1"}]}))


def test_status_round_trip_and_unset_fields_are_removed_by_the_patch() -> None:
    status = WorkspaceStatus(container_id="c1", token_generation=2, restart_count=1)
    patch = status_patch(status)
    assert patch["containerID"] == "c1" and patch["lastRegisterFailure"] is None
    assert status_from_body({"status": patch}) == status
    assert status_from_body({"status": {**patch, "kopf": {"progress": {}}}}) == status
    assert status_from_body({"status": {"phase": "NoSuchPhase"}}) is None
    assert status_from_body({}) is None


def test_invalid_status_is_failed_and_degraded_with_the_message() -> None:
    now = datetime.now(UTC)
    status = invalid_status(None, "spec.image: bad", 3, now)
    assert status.phase == "Failed" and status.observed_generation == 3
    degraded = status.condition("Degraded")
    assert degraded is not None and degraded.status == "True"
    assert degraded.reason == "InvalidSpec" and degraded.message == "spec.image: bad"


def test_decode_secret_reads_data_and_skips_binary() -> None:
    secret = {"data": {"api-key": base64.b64encode(b"sk-1").decode(),
                       "blob": base64.b64encode(b"\xff\xfe").decode(), "bad": "%%%"},
              "stringData": {"other": "plain"}}
    assert decode_secret(secret) == {"api-key": "sk-1", "other": "plain"}


def test_run_flags_become_operator_options() -> None:
    from controller.app.cli import build_parser
    from controller.app.runtime_k8s import operator_options

    args = build_parser().parse_args([
        "run", "--kubernetes", "--namespace", "a", "--namespace", "b",
        "--peering-priority", "7", "--resync-seconds", "12",
        "--liveness", "http://0.0.0.0:8089/healthz"])
    options = operator_options(vars(args))
    assert args.kubernetes and options.namespaces == ("a", "b")
    assert options.priority == 7 and not options.standalone
    assert options.resync_seconds == 12.0
    assert options.liveness_endpoint == "http://0.0.0.0:8089/healthz"
    single = operator_options(vars(build_parser().parse_args(
        ["run", "--kubernetes", "--no-peering"])))
    assert single.standalone and single.namespaces == () and single.priority > 0
