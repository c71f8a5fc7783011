"""What an apply would change (`wsctl diff`, `apply --dry-run=server`). Pure.

Two views of one workspace: the spec fields that differ (paths and values as the
manifest has them: a secret is a reference there, never a value), and whether the
reconcile would then replace the container, with why: the keys of the config
material (`projection.config_material`) that differ, env variables by name. A
secret's value changed is said as such, never shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Change:
    path: str
    before: Any
    after: Any

    def line(self) -> str:
        return f"{self.path}: {_shown(self.before)} -> {_shown(self.after)}"


def _shown(value: Any) -> str:
    return "<unset>" if value is None else repr(value) if isinstance(value, str) else str(value)


def field_changes(before: Any, after: Any, path: str = "spec") -> list[Change]:
    """Leaf-by-leaf differences of two JSON values; lists of objects with a `name` are
    compared by name (`spec.env[LOG_LEVEL].value`), other lists as a whole."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[Change] = []
        for key in sorted(set(before) | set(after), key=str):
            changes += field_changes(before.get(key), after.get(key), f"{path}.{key}")
        return changes
    if _named(before) and _named(after):
        b = {item["name"]: item for item in before or []}
        a = {item["name"]: item for item in after or []}
        changes = []
        for name in sorted(set(b) | set(a)):
            changes += field_changes(b.get(name), a.get(name), f"{path}[{name}]")
        return changes
    return [] if before == after else [Change(path, before, after)]


def _named(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in value))


def recreate_reasons(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Why a container made for `before`'s config material is not one for `after`'s
    (empty: it stays)."""
    reasons = []
    for key in sorted(set(before) | set(after)):
        if key == "env":
            reasons += _env_reasons(before.get("env") or {}, after.get("env") or {})
        elif before.get(key) != after.get(key):
            reasons.append(key)
    return reasons


def _env_reasons(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    reasons = []
    for name in sorted(set(before) | set(after)):
        if name not in before:
            reasons.append(f"env {name} added")
        elif name not in after:
            reasons.append(f"env {name} removed")
        elif before[name] != after[name]:
            secret = str(before[name]).startswith("sha256:") or \
                str(after[name]).startswith("sha256:")
            reasons.append(f"env {name} {'(a secret) ' if secret else ''}changed")
    return reasons
