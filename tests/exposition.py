"""Reading /metrics in tests with prometheus_client's own parser (not a regex)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, tuple[tuple[str, str], ...]]
"""(sample name, sorted labels)"""


@dataclass(frozen=True)
class Exposition:
    types: dict[str, str]
    """family name -> type, with the sample-name form of counters (`..._total`)"""
    helps: dict[str, str]
    values: dict[Key, float]

    def value(self, name: str, **labels: str) -> float:
        return self.values[(name, tuple(sorted(labels.items())))]

    def get(self, name: str, default: float = 0.0, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), default)

    def labelled(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {labels: v for (n, labels), v in self.values.items() if n == name}

    def monotonic(self) -> dict[Key, float]:
        """Every sample that must never decrease: counters and histogram series."""
        grows = {n for n, kind in self.types.items() if kind in ("counter", "histogram")}
        return {key: v for key, v in self.values.items()
                if key[0] in grows or key[0].rsplit("_", 1)[0] in grows}


def parse(text: str) -> Exposition:
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    values: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name not in types, f"family {name} twice"
        types[name] = family.type
        helps[name] = family.documentation
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in values, f"sample {key} twice"
            values[key] = sample.value
    return Exposition(types, helps, values)


def never_decreased(before: Exposition, after: Exposition,
                    gone: Callable[[str], bool] = lambda workspace: False) -> list[str]:
    """Counter and histogram samples of `before` that are gone or smaller in `after`;
    a series of a workspace for which `gone(id)` holds (deleted) may go."""
    problems = []
    for key, old in before.monotonic().items():
        new = after.values.get(key)
        workspace = dict(key[1]).get("workspace")
        if new is None and workspace is not None and gone(workspace):
            continue
        if new is None or new < old:
            problems.append(f"{key}: {old} -> {new}")
    return problems
