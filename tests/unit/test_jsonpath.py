"""`wsctl get -o jsonpath=...`: kubectl's template layer around jsonpath-ng."""

from __future__ import annotations

from typing import Any

import pytest

from controller.app.cli_jsonpath import Template, TemplateError
from controller.app.cli_workspaces import output_format

LIST: dict[str, Any] = {"items": [
    {"metadata": {"name": "a", "labels": {"team": "x"}},
     "status": {"phase": "Online", "restartCount": 2,
                "conditions": [{"type": "Ready", "status": "True"}]}},
    {"metadata": {"name": "b"},
     "status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}]}},
]}


@pytest.mark.parametrize(("template", "printed"), [
    ("{.items[*].metadata.name}", "a b"),
    ("names: {.items[*].metadata.name}!", "names: a b!"),
    ('{range .items[*]}{.metadata.name}{"\\t"}{.status.phase}{"\\n"}{end}',
     "a\tOnline\nb\tFailed\n"),
    ('{.items[?(@.status.phase=="Online")].metadata.name}', "a"),
    ('{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status};'
     "{end}", "a=True;b=False;"),
    ("{.items[0].metadata.labels}", '{"team":"x"}'),  # not a string: JSON
    ("{.items[0].status.restartCount}", "2"),
    ("{.items[-1:].metadata.name}", "b"),
    ("{..phase}", "Online Failed"),
    ("{range .items[*]}{$.items[0].metadata.name}{end}", "aa"),  # $: the root
    ("{.items[5].metadata.name}", ""),  # absent: nothing, as kubectl's default
    ('{"{"}{.items[0].metadata.name}{"}"}', "{a}"),
])
def test_templates(template: str, printed: str) -> None:
    assert Template(template)(LIST) == printed


@pytest.mark.parametrize(("template", "reason"), [
    ("{.items[", "unclosed '{' at character 1"),
    ("{.items[*].metadata.name", "unclosed '{'"),
    ("x}", "unmatched '}' at character 2"),
    ("{range .items[*]}x", "{range ...} without its {end}"),
    ("{end}", "{end} without a {range ...}"),
    ("{range}{end}", "{range} needs an expression"),
    ("{.a b}", "{.a b}: Parse error"),
])
def test_bad_templates_name_the_problem(template: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=None) as caught:
        Template(template)
    assert reason in str(caught.value)


def test_output_format() -> None:
    assert output_format("name") == "name"
    assert isinstance(output_format("jsonpath={.items[*].metadata.name}"), Template)
    with pytest.raises(Exception, match="'xml' is not one of table, json, yaml, name"):
        output_format("xml")
    with pytest.raises(Exception, match="jsonpath: unclosed"):
        output_format("jsonpath={.a")
    with pytest.raises(TemplateError):
        Template("{")
