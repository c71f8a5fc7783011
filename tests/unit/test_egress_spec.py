"""spec.egress: modes and the allow list's entries, each refusal naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.core.model import Workspace


def egress(value: dict[str, Any]) -> Workspace:
    return Workspace.model_validate({"apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace",
                                     "metadata": {"name": "a"}, "spec": {"egress": value}})


def test_none_is_the_default() -> None:
    assert egress({}).spec.egress.mode == "none"
    assert egress({}).spec.egress.allow == []


def test_an_allowlist_of_names_wildcards_and_ports_lower_cased() -> None:
    spec = egress({"mode": "allowlist",
                   "allow": ["PyPI.org", "*.github.com", "outside:8443", "outside"]})
    assert spec.spec.egress.allow == ["pypi.org", "*.github.com", "outside:8443", "outside"]


@pytest.mark.parametrize(("value", "field", "why"), [
    ({"mode": "none", "allow": ["x.org"]}, "spec.egress", "only read with mode: allowlist"),
    ({"mode": "open", "allow": ["x.org"]}, "spec.egress", "only read with mode: allowlist"),
    ({"mode": "allowlist", "allow": ["http://x.org"]}, "spec.egress.allow", "allow[0]"),
    ({"mode": "allowlist", "allow": ["x.org", "a b"]}, "spec.egress.allow", "allow[1]"),
    ({"mode": "allowlist", "allow": ["x.org:0"]}, "spec.egress.allow", "port out of range"),
    ({"mode": "allowlist", "allow": ["x.org:65536"]}, "spec.egress.allow", "port out of range"),
    ({"mode": "allowlist", "allow": ["*.*.x.org"]}, "spec.egress.allow", "allow[0]"),
    ({"mode": "allowlist", "allow": ["x" * 64 + ".org"]}, "spec.egress.allow", "allow[0]"),
    ({"mode": "everything"}, "spec.egress.mode", ""),
])
def test_bad_entries_are_refused_naming_the_field(value: dict[str, Any], field: str,
                                                  why: str) -> None:
    with pytest.raises(ValidationError) as refused:
        egress(value)
    text = str(refused.value)
    assert field in text and why in text
