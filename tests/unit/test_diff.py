"""What an apply would change (controller/core/diff.py, controller/app/preview.py)."""

from __future__ import annotations

from typing import Any

from controller.app.preview import preview
from controller.core.diff import field_changes, recreate_reasons
from controller.core.model import Workspace
from controller.core.settings import PlatformSettings


def ws(env: dict[str, str] | None = None, labels: dict[str, str] | None = None,
       secret: bool = False, **spec: Any) -> Workspace:
    entries: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in (env or {}).items()]
    if secret:
        entries.append({"name": "TOKEN", "valueFrom": {"secretRef": {"name": "s", "key": "k"}}})
    return Workspace.model_validate({"metadata": {"name": "alice", "labels": labels or {}},
                                     "spec": {"env": entries, **spec}})


def test_field_changes_name_lists_by_name() -> None:
    before = {"image": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}
    after = {"image": "b", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]}
    assert [c.line() for c in field_changes(before, after)] == [
        "spec.env[X]: {'name': 'X', 'value': '1'} -> <unset>",
        "spec.env[Y].value: '2' -> '3'",
        "spec.env[Z]: <unset> -> {'name': 'Z', 'value': '4'}",
        "spec.image: 'a' -> 'b'"]
    assert field_changes({"a": [1, 2]}, {"a": [1, 2]}) == []


def test_recreate_reasons() -> None:
    before = {"image": "a", "env": {"X": "1", "K": "sha256:aa"}, "memory": 1}
    after = {"image": "a", "env": {"X": "2", "K": "sha256:bb", "N": "new"}, "memory": 2}
    assert recreate_reasons(before, after) == [
        "env K (a secret) changed", "env N added", "env X changed", "memory"]
    assert recreate_reasons(before, before) == []


async def lookup(workspace: Workspace) -> dict[tuple[str, str], str]:
    return {("s", "k"): SECRET[0]}

SECRET = ["first-value"]


async def test_an_env_change_recreates_a_label_change_does_not() -> None:
    settings = PlatformSettings()
    current = ws({"LOG_LEVEL": "info"}, {"team": "a"})
    env = await preview(current, ws({"LOG_LEVEL": "debug"}, {"team": "a"}), lookup, settings)
    assert env["result"] == "configured" and env["container"] == "recreate"
    assert env["why"] == ["env LOG_LEVEL changed"]
    assert env["changes"] == ["spec.env[LOG_LEVEL].value: 'info' -> 'debug'"]
    label = await preview(current, ws({"LOG_LEVEL": "info"}, {"team": "b"}), lookup, settings)
    assert label["result"] == "configured" and label["container"] == "keep"
    assert label["changes"] == ["metadata.labels.team: 'a' -> 'b'"] and label["why"] == []
    same = await preview(current, ws({"LOG_LEVEL": "info"}, {"team": "a"}), lookup, settings)
    assert (same["result"], same["container"], same["changes"]) == ("unchanged", "keep", [])
    new = await preview(None, current, lookup, settings)
    assert (new["result"], new["container"]) == ("created", "create")


async def test_a_secret_value_is_never_shown() -> None:
    settings = PlatformSettings()
    current = ws(secret=True)
    SECRET[0] = "first-value"
    before = await preview(current, current, lookup, settings)
    assert before["container"] == "keep"
    # the same spec, the secret's value changed since the container was made: the
    # preview compares the two specs under the same secrets, so nothing to say
    SECRET[0] = "second-value"
    after = await preview(current, ws(secret=True, image="other:1"), lookup, settings)
    assert after["why"] == ["image"]
    assert "second-value" not in repr(after) and "first-value" not in repr(after)


async def test_a_missing_secret_is_said() -> None:
    async def nothing(workspace: Workspace) -> dict[tuple[str, str], str]:
        return {}
    result = await preview(ws(), ws(secret=True), nothing, PlatformSettings())
    assert result["container"] == "cannot" and "cannot be projected" in result["why"][0]
