"""The Workspace CustomResourceDefinition, generated from the pydantic model. Pure.

`crd()` turns `Workspace.model_json_schema()` into a structural OpenAPI v3
schema (refs inlined, `Optional` as `nullable`, titles dropped) and adds what
JSON Schema cannot say from the model's validators: name, image, URL and
quantity patterns, list-map keys, and CEL rules. `crds/workspace.yaml` is
`wsctl crd` output; a test keeps the committed file equal to it.

`draft4_schema()` turns the CRD's schema into a JSON Schema Draft 4 document
that validates Workspace manifests offline the way the API server would
(strict field validation included), e.g. with `jsonschema.Draft4Validator`.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from controller.core.model import API_VERSION, KIND, Workspace

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "workspaces"
SINGULAR = "workspace"
SHORT_NAMES = ["ws"]
CATEGORIES = ["wsctl"]

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
IMAGE_REF = r"^[a-z0-9]([a-z0-9._/:@-]*[a-z0-9._@-])?$"
HTTP_URL = r"^https?://[^/\s]+(/\S*)?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
MEMORY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
CPUS = r"^[0-9]+(\.[0-9]+)?m?$"
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

# What the model's field validators check, said in the CRD's terms. Paths use
# wire names; "[]" is "every item of the list".
RULES: dict[str, dict[str, Any]] = {
    "metadata.name": {"pattern": DNS1123_LABEL},
    "spec.image": {"pattern": IMAGE_REF},
    "spec.llm.baseURL": {"pattern": HTTP_URL},
    "spec.llm.apiKey.secretRef.name": {"pattern": DNS1123_LABEL},
    # maxItems bounds the CEL rules' cost (the API server rejects unbounded ones).
    "spec.env": {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                 "maxItems": 100},
    "spec.env[]": {"x-kubernetes-validations": [{
        "rule": "has(self.value) != has(self.valueFrom)",
        "message": "set exactly one of value and valueFrom"}]},
    "spec.env[].name": {"pattern": ENV_NAME, "x-kubernetes-validations": [{
        "rule": "!self.startsWith('WSCTL_')",
        "message": "names starting with WSCTL_ are set by the platform"}]},
    "spec.env[].valueFrom.secretRef.name": {"pattern": DNS1123_LABEL},
    "spec.resources.memory": {"pattern": MEMORY},
    "spec.resources.cpus": {"pattern": CPUS},
    "status.conditions": {"x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["type"]},
    "status.conditions[].reason": {"pattern": CONDITION_REASON},
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Ready", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Reason", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Degraded")].reason'},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restartCount"},
    {"name": "Egress", "type": "string", "jsonPath": ".spec.egress.mode"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _description(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON-schema node as a structural OpenAPI v3 node."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[1]]
        return {**_structural(target, defs), **_structural(node, defs)}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {options!r} in a structural schema")
        merged = {**_structural(options[0], defs), **_structural(node, defs)}
        merged["nullable"] = True
        return merged
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "additionalProperties") and not isinstance(value, dict):
            continue  # pruning does what additionalProperties: false would
        if key == "const":
            out["enum"] = [value]
        elif key == "description":
            out[key] = _description(value)
        elif key == "default" and value is None:
            continue
        elif key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    return out


def _at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        items = part.endswith("[]")
        node = node["properties"][part.removesuffix("[]")]
        if items:
            node = node["items"]
    return node


def openapi_schema() -> dict[str, Any]:
    """The CRD's openAPIV3Schema for Workspace."""
    raw = Workspace.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _structural(raw, defs)
    props = schema["properties"]
    props["apiVersion"] = {"type": "string", "description": f"{API_VERSION}"}
    props["kind"] = {"type": "string", "description": f"{KIND}"}
    # A CRD may only constrain metadata.name (and generateName).
    props["metadata"] = {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 63}}}
    schema.pop("required", None)  # metadata is the server's; spec has defaults
    schema["description"] = ("A workspace: one AI-agent container on the node's Docker "
                             "engine, reconciled by wsctl.")
    props["spec"]["description"] = "Desired state; see wsctl's docs/design.md section 4."
    props["status"]["description"] = "Observed state, written by the controller only."
    for path, rules in RULES.items():
        _at(schema, path).update(rules)
    return schema


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": SINGULAR, "kind": KIND,
                      "listKind": f"{KIND}List", "shortNames": SHORT_NAMES,
                      "categories": CATEGORIES},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": openapi_schema()},
            }],
        },
    }


HEADER = ("# Generated from controller/core/model.py by `wsctl crd` (controller/core/crd.py).\n"
          "# Do not edit: change the model, then run `wsctl crd > crds/workspace.yaml`.\n")


_FIRST = ("type", "description", "format", "enum", "default")


def _ordered(value: Any) -> Any:
    """A copy with `type` and `description` first (readable) and no shared nodes
    (so the YAML has no anchors)."""
    if isinstance(value, dict):
        keys = [k for k in _FIRST if k in value] + [k for k in value if k not in _FIRST]
        return {k: _ordered(value[k]) for k in keys}
    if isinstance(value, list):
        return [_ordered(v) for v in value]
    return value


def render() -> str:
    return HEADER + yaml.safe_dump(_ordered(crd()), sort_keys=False, width=100)


# ------------------------------------------------------------------ offline validation


def draft4_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    """A CRD openAPIV3Schema as JSON Schema Draft 4, with the API server's strict
    field validation (unknown fields are errors, except under metadata)."""

    def convert(node: dict[str, Any], under_metadata: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key.startswith("x-kubernetes-") or key == "nullable":
                continue
            if key == "properties":
                out[key] = {name: convert(sub, under_metadata or name == "metadata")
                            for name, sub in value.items()}
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                out[key] = convert(value, under_metadata)
            else:
                out[key] = copy.deepcopy(value)
        if node.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        if "properties" in node and "additionalProperties" not in node and not under_metadata:
            out["additionalProperties"] = False
        return out

    converted = convert(openapi, False)
    converted["$schema"] = "http://json-schema.org/draft-04/schema#"
    return converted


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()
