"""The Workspace CRD: generated from the model, valid, and validating manifests
the way the model does (issue 4). Offline: no API server, no Docker."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from controller.core import crd
from controller.core.model import Workspace
from tests.operator.conftest import CRD_FILE, REPO, crd_schema, crd_validator, problems

VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
DEPLOY = REPO / "deploy" / "kubernetes"
EXAMPLES = [*sorted((REPO / "examples").glob("*.yaml")),
            *sorted((DEPLOY / "example").glob("*.yaml"))]


def workspaces_in(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text())
            if isinstance(d, dict) and d.get("kind") == "Workspace"]


VALID: dict[str, Any] = workspaces_in(DEPLOY / "example" / "workspace.yaml")[0]


def test_committed_crd_is_the_generated_one() -> None:
    assert CRD_FILE.read_text() == crd.render(), (
        "crds/workspace.yaml is stale: run `wsctl crd > crds/workspace.yaml`")


def test_crd_shape() -> None:
    spec = yaml.safe_load(CRD_FILE.read_text())["spec"]
    assert spec["names"]["shortNames"] == ["ws"] and spec["scope"] == "Namespaced"
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase", "Ready", "Reason", "Restarts", "Egress", "Age"]
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"][
        "properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"][:1] == ["type"]


@pytest.mark.parametrize("path", [
    CRD_FILE, *sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml"),
    *sorted((DEPLOY / "example").glob("*.yaml"))], ids=lambda p: str(p.relative_to(REPO)))
def test_manifests_pass_kubernetes_validate_strict(path: Path) -> None:
    result = subprocess.run([str(VALIDATE), "--strict", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr


def test_kubernetes_validate_catches_a_typo_in_the_schema(tmp_path: Path) -> None:
    broken = tmp_path / "crd.yaml"
    broken.write_text(CRD_FILE.read_text().replace("maxLength: 63", "maxLenght: 63", 1))
    result = subprocess.run([str(VALIDATE), "--strict", str(broken)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "maxLenght" in result.stdout + result.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_workspace_validates_against_the_crd(path: Path) -> None:
    validator = crd_validator()
    documents = workspaces_in(path)
    if path.name != "secret.yaml":
        assert documents, f"{path} has no Workspace"
    for document in documents:
        assert problems(validator, document) == []
        Workspace.model_validate(document)  # and the model agrees


def test_a_status_written_by_the_controller_validates() -> None:
    from datetime import UTC, datetime

    from controller.core.conditions import Verdict, apply_verdict
    from controller.core.model import RegisterFailure, WorkspaceStatus
    from controller.drivers.k8s_objects import status_patch

    now = datetime.now(UTC)
    verdict = Verdict(ready=("True", "Registered", ""), degraded=("False", "Healthy", ""),
                      progressing=("False", "Complete", ""))
    status = WorkspaceStatus(
        observed_generation=3, container_id="abc", config_hash="0123456789abcdef",
        token_generation=2, restart_count=1,
        last_register_failure=RegisterFailure(at=now, class_="missing_url", message="x"),
        conditions=apply_verdict([], verdict, now, 3))
    obj = {**VALID, "status": {k: v for k, v in status_patch(status).items() if v is not None}}
    assert problems(crd_validator(), obj) == []


INVALID: list[tuple[str, Any, str]] = [
    ("spec.llm.provider", "no-such-provider", "spec.llm.provider"),
    ("metadata.name", "Alice", "metadata.name"),
    ("metadata.name", "a" * 64, "metadata.name"),
    ("spec.startupTimeoutSeconds", 0, "spec.startupTimeoutSeconds"),
    ("spec.startupTimeoutSeconds", 3601, "spec.startupTimeoutSeconds"),
    ("spec.livenessTimeoutSeconds", 9, "spec.livenessTimeoutSeconds"),
    ("spec.livenessTimeoutSeconds", 86401, "spec.livenessTimeoutSeconds"),
    ("spec.image", "Bad Image", "spec.image"),
    ("spec.image", "wsctl/agent:", "spec.image"),
    ("spec.llm.baseURL", "ftp://example.com", "spec.llm.baseURL"),
    ("spec.llm.apiKey.secretRef.name", "Not_A_Name", "spec.llm.apiKey.secretRef.name"),
    ("spec.resources.memory", "lots", "spec.resources.memory"),
    ("spec.resources.cpus", "two", "spec.resources.cpus"),
    ("spec.env", [{"name": "1BAD", "value": "x"}], "spec.env[0].name"),
    ("spec.imagee", "typo", "spec"),  # unknown field: strict field validation
]


def _with(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = obj
    for part in parents:
        node = node[part]
    node[last] = value
    return obj


@pytest.mark.parametrize("path, value, field", INVALID,
                         ids=[f"{p}={v!r}"[:40] for p, v, _ in INVALID])
def test_an_invalid_workspace_is_rejected_with_the_field_path(path: str, value: Any,
                                                               field: str) -> None:
    found = problems(crd_validator(), _with(path, value))
    assert found, f"the CRD accepted {path}={value!r}"
    assert any(p.startswith(f"{field}:") for p in found), found
    with pytest.raises(ValidationError):  # the model rejects it too
        Workspace.model_validate(_with(path, value))


def test_invalid_example_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_with("spec.llm.provider", "nope")))
    [document] = workspaces_in(bad)
    [message] = problems(crd_validator(), document)
    assert re.match(r"^spec\.llm\.provider: 'nope' is not one of \[", message), message


@pytest.mark.parametrize("field, pattern, samples", [
    ("image", crd.IMAGE_REF, ["wsctl/agent:latest", "a", "registry.local:5000/x/y@sha256:ab",
                              "Bad", "x:", "x/", "-x", "x y", ""]),
    ("memory", crd.MEMORY, ["512Mi", "1Gi", "268435456", "1.5G", "lots", "12 Mi", "1Xi"]),
    ("cpus", crd.CPUS, ["1", "0.5", "500m", "two", "1.", "5mm"]),
])
def test_crd_patterns_agree_with_the_model(field: str, pattern: str,
                                           samples: list[str]) -> None:
    for sample in samples:
        by_crd = re.fullmatch(pattern.strip("^$"), sample) is not None
        if field == "image":
            spec: dict[str, Any] = {"image": sample}
        else:
            spec = {"resources": {field: sample}}
        try:
            Workspace.model_validate({"metadata": {"name": "x"}, "spec": spec})
            by_model = True
        except ValidationError as exc:
            # Values the model rejects only for range (below 32Mi, above 64 CPUs) are
            # syntactically fine for the CRD; none of these samples is one.
            by_model = "must be at least" in str(exc) or "must be between" in str(exc)
        assert by_crd == by_model, f"{field}={sample!r}: CRD {by_crd}, model {by_model}"


def test_draft4_schema_is_a_valid_draft4_schema() -> None:
    jsonschema.Draft4Validator.check_schema(crd.draft4_schema(crd_schema()))
