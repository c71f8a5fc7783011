"""Model validation: every error names its field and its reason."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.core.model import Workspace, WorkspaceKey, parse_cpus, parse_memory
from tests.unit.helpers import minimax


def errors(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        Workspace.model_validate(data)
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in info.value.errors()}


def doc(name: str = "alice", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace",
            "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize("name", ["Alice", "-alice", "alice-", "a_b", "a.b", "x" * 64, ""])
def test_bad_names(name: str) -> None:
    found = errors(doc(name))
    assert list(found) == ["metadata.name"]


def test_unknown_provider() -> None:
    found = errors(doc(llm={"provider": "acme"}))
    assert "spec.llm.provider" in found
    assert "minimax" in found["spec.llm.provider"]


@pytest.mark.parametrize("spec, path", [
    ({"startupTimeoutSeconds": "soon"}, "spec.startupTimeoutSeconds"),
    ({"startupTimeoutSeconds": 0}, "spec.startupTimeoutSeconds"),
    ({"livenessTimeoutSeconds": 9}, "spec.livenessTimeoutSeconds"),
    ({"livenessTimeoutSeconds": 86401}, "spec.livenessTimeoutSeconds"),
    ({"livenessTimeoutSeconds": "a minute"}, "spec.livenessTimeoutSeconds"),
    ({"paused": "maybe"}, "spec.paused"),
    ({"env": {"A": "1"}}, "spec.env"),
    ({"env": [{"name": "1A", "value": "x"}]}, "spec.env.0.name"),
    ({"env": [{"name": "WSCTL_TOKEN_FILE", "value": "x"}]}, "spec.env.0.name"),
    ({"resources": {"memory": "lots"}}, "spec.resources.memory"),
    ({"resources": {"memory": "1Mi"}}, "spec.resources.memory"),
    ({"resources": {"cpus": "0"}}, "spec.resources.cpus"),
    ({"image": "Bad Image"}, "spec.image"),
    ({"llm": {"provider": "minimax", "baseURL": "ftp://x"}}, "spec.llm.baseURL"),
    ({"llm": {"provider": "minimax", "apiKey": {"secretRef": {"name": "m"}}}},
     "spec.llm.apiKey.secretRef.key"),
    ({"restartedAt": "yesterday"}, "spec.restartedAt"),
    ({"storage": {"mountPath": "workspace"}}, "spec.storage.mountPath"),
    ({"storage": {"mountPath": "/"}}, "spec.storage.mountPath"),
    ({"storage": {"mountPath": "/a/../etc"}}, "spec.storage.mountPath"),
    ({"storage": {"mountPath": "/data/"}}, "spec.storage.mountPath"),
    ({"storage": {"mountPath": "/tmp"}}, "spec.storage.mountPath"),
    ({"storage": {"mountPath": "/configs/x"}}, "spec.storage.mountPath"),
    ({"storage": {"mountPath": "/opt"}}, "spec.storage.mountPath"),  # would hide /opt/wsctl
    ({"storage": {"reclaimPolicy": "Recycle"}}, "spec.storage.reclaimPolicy"),
    ({"storage": {"size": "1Gi"}}, "spec.storage.size"),
    ({"command": []}, "spec.command"),
    ({"command": "python3 -m http.server"}, "spec.command"),
    ({"args": [1]}, "spec.args.0"),
    ({"workingDir": "srv"}, "spec.workingDir"),
    ({"agent": {"protocol": "grpc"}}, "spec.agent.protocol"),
    ({"agent": {"protocol": "none", "a2aPort": 0}}, "spec.agent.a2aPort"),
    ({"agent": {"protocol": "none"}, "readinessProbe": {}}, "spec.readinessProbe"),
    ({"agent": {"protocol": "none"}, "readinessProbe": {"httpGet": {"port": 70000}}},
     "spec.readinessProbe.httpGet.port"),
    ({"agent": {"protocol": "none"}, "readinessProbe": {"httpGet": {"port": 80,
                                                                    "path": "health"}}},
     "spec.readinessProbe.httpGet.path"),
    ({"agent": {"protocol": "none"}, "livenessProbe": {"exec": {"command": []}}},
     "spec.livenessProbe.exec.command"),
    ({"agent": {"protocol": "none"}, "livenessProbe": {"tcpSocket": {"port": 1},
                                                      "periodSeconds": 0}},
     "spec.livenessProbe.periodSeconds"),
])
def test_field_errors_name_the_path(spec: dict[str, Any], path: str) -> None:
    assert path in errors(doc(**spec))


def test_env_may_not_override_projected_llm_vars() -> None:
    found = errors(doc(llm={"provider": "minimax"},
                       env=[{"name": "ANTHROPIC_BASE_URL", "value": "http://x"}]))
    assert any("spec.llm" in msg for msg in found.values())


def test_env_value_xor_value_from() -> None:
    found = errors(doc(env=[{"name": "A"}]))
    assert "exactly one of value and valueFrom" in " ".join(found.values())


def test_wrong_kind_and_api_version() -> None:
    found = errors({**doc(), "kind": "Pod", "apiVersion": "v1"})
    assert {"kind", "apiVersion"} <= set(found)


def test_defaults_and_wire_form() -> None:
    ws = minimax()
    wire = ws.to_wire()
    assert wire["spec"]["llm"]["apiKey"] == {"secretRef": {"name": "minimax", "key": "api-key"}}
    assert wire["spec"]["startupTimeoutSeconds"] == 180
    assert wire["metadata"]["namespace"] == "default"
    assert Workspace.model_validate(wire) == ws


def test_quantities() -> None:
    assert parse_memory("512Mi") == 512 * 2**20
    assert parse_memory("1G") == 10**9
    assert parse_memory("1048576") == 2**20
    assert parse_cpus("500m") == 0.5
    assert parse_cpus("2") == 2.0


def test_workspace_key_id_round_trip() -> None:
    key = WorkspaceKey("team-a", "alice")
    assert key.id == "team-a.alice"
    assert WorkspaceKey.from_id(key.id) == key
    with pytest.raises(ValueError, match="not a workspace id"):
        WorkspaceKey.from_id("alice")


@pytest.mark.parametrize("field, value", [
    ("privileged", True), ("hostNetwork", True), ("hostPID", True),
    ("volumes", [{"hostPath": "/"}]), ("mounts", ["/var/run/docker.sock:/sock"]),
    ("dockerSocket", True), ("capAdd", ["SYS_ADMIN"]), ("devices", ["/dev/kmsg"]),
    ("user", "0"),
])
def test_host_access_is_refused_naming_field_and_reason(field: str, value: Any) -> None:
    found = errors(doc(**{field: value}))
    (message,) = found.values()
    assert f"spec.{field} is not allowed" in message
    assert list(found) == ["spec"]


def test_unknown_spec_field_is_named() -> None:
    assert "spec.colour" in errors(doc(colour="blue"))


def test_storage_defaults_to_a_retained_volume_at_workspace() -> None:
    storage = Workspace.model_validate(doc()).spec.storage
    assert (storage.mount_path, storage.reclaim_policy) == ("/workspace", "Retain")
    custom = Workspace.model_validate(doc(storage={"mountPath": "/home/agent/work",
                                                   "reclaimPolicy": "Delete"})).spec.storage
    assert (custom.mount_path, custom.reclaim_policy) == ("/home/agent/work", "Delete")
    assert "would hide or shadow /tmp" in errors(doc(storage={"mountPath": "/tmp/x"}))[
        "spec.storage.mountPath"]


def test_a_probe_takes_exactly_one_handler_and_names_what_it_found() -> None:
    found = errors(doc(agent={"protocol": "none"}, livenessProbe={
        "tcpSocket": {"port": 1}, "exec": {"command": ["true"]}}))
    assert "found tcpSocket, exec" in found["spec.livenessProbe"]


@pytest.mark.parametrize("field", ["readinessProbe", "livenessProbe"])
def test_probes_are_read_only_with_protocol_none(field: str) -> None:
    probe: dict[str, Any] = {field: {"tcpSocket": {"port": 8000}}}
    found = errors(doc(**probe))
    assert any(f"{field}: only read with agent.protocol: none" in msg
               for msg in found.values()), found
    a2a = errors(doc(agent={"a2aPort": 9000}))
    assert any("agent.a2aPort: only read with agent.protocol: none" in msg
               for msg in a2a.values()), a2a


def test_any_image_fields_on_the_wire() -> None:
    ws = Workspace.model_validate(doc(
        image="wsctl/agent:latest", command=["python3", "-m", "http.server"], args=["8000"],
        workingDir="/workspace", agent={"protocol": "none", "a2aPort": 9000},
        readinessProbe={"httpGet": {"path": "/", "port": 8000}}))
    spec = ws.to_wire()["spec"]
    assert spec["command"] == ["python3", "-m", "http.server"] and spec["args"] == ["8000"]
    assert spec["workingDir"] == "/workspace"
    assert spec["agent"] == {"protocol": "none", "a2aPort": 9000}
    assert spec["readinessProbe"]["periodSeconds"] == 10
    assert ws.spec.readiness_probe is not None
    assert ws.spec.readiness_probe.shown() == "httpGet :8000/"
