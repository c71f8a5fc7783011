"""Prometheus text rendering: histogram shape, label escaping, HELP/TYPE per family."""

from __future__ import annotations

import re

import pytest

from controller.api.metrics import BUCKETS, MetricsInput, render

SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>.*)\})? (?P<value>\S+)$')
LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\\n]|\\[\\"n])*)"')


def metrics(**overrides: object) -> MetricsInput:
    values: dict[str, object] = {
        "reconcile_seconds": [0.001, 0.005, 0.02, 0.3, 0.3, 1.0, 7.0, 45.0],
        "recreates": {"ConfigChanged": 2, "Created": 5},
        "degraded": {"RegisterFailed": 1},
        "register_failures": {"blocked_private_url": 3},
        "auth_failures": {"stale_token": 4},
        "queue_depth": 2, "workspaces": 6, "reconcile_errors": 1,
        "docker_calls": {"list": 300, "inspect": 21},
    }
    values.update(overrides)
    return MetricsInput(**values)  # type: ignore[arg-type]


def samples(text: str) -> list[tuple[str, dict[str, str], str]]:
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels = {m["key"]: m["value"] for m in LABEL.finditer(match["labels"] or "")}
        out.append((match["name"], labels, match["value"]))
    return out


def buckets(text: str) -> list[tuple[str, float]]:
    return [(labels["le"], float(value)) for name, labels, value in samples(text)
            if name == "wsctl_reconcile_duration_seconds_bucket"]


def test_histogram_buckets_are_cumulative_and_inf_is_count() -> None:
    m = metrics()
    text = render(m)
    got = buckets(text)
    assert [le for le, _ in got] == [f"{b:g}" for b in BUCKETS] + ["+Inf"]
    counts = [c for _, c in got]
    assert counts == sorted(counts)  # cumulative: never decreases
    for (le, count), bound in zip(got, BUCKETS, strict=False):
        assert count == sum(1 for s in m.reconcile_seconds if s <= bound), le
    by_name = {name: float(value) for name, _, value in samples(text)}
    assert got[-1][1] == by_name["wsctl_reconcile_duration_seconds_count"] == 8
    assert by_name["wsctl_reconcile_duration_seconds_sum"] == pytest.approx(
        sum(m.reconcile_seconds), abs=1e-6)
    assert dict(got)["0.005"] == 2  # a value on a bound counts in that bucket
    assert dict(got)["30"] == 7     # 45 s is only in +Inf


def test_empty_histogram() -> None:
    text = render(metrics(reconcile_seconds=[]))
    assert all(count == 0 for _, count in buckets(text))
    assert "wsctl_reconcile_duration_seconds_count 0" in text.splitlines()


def test_label_values_are_escaped() -> None:
    nasty = 'a"b\\c\nd'
    text = render(metrics(recreates={nasty: 1}, degraded={}, register_failures={},
                          auth_failures={}))
    (line,) = [x for x in text.splitlines() if x.startswith("wsctl_recreates_total{")]
    assert line == 'wsctl_recreates_total{reason="a\\"b\\\\c\\nd"} 1'
    (_, labels, value), = [s for s in samples(text) if s[0] == "wsctl_recreates_total"]
    assert labels == {"reason": 'a\\"b\\\\c\\nd'} and value == "1"


def test_every_family_has_help_and_type_before_its_samples() -> None:
    text = render(metrics())
    lines = text.splitlines()
    assert text.endswith("\n")
    helps = {line.split()[2]: i for i, line in enumerate(lines) if line.startswith("# HELP ")}
    types = {line.split()[2]: (i, line.split()[3]) for i, line in enumerate(lines)
             if line.startswith("# TYPE ")}
    assert helps.keys() == types.keys()
    assert all(len(line.split(None, 3)) == 4 for line in lines if line.startswith("# HELP "))
    for i, line in enumerate(lines):
        if line.startswith("#"):
            continue
        name = SAMPLE.match(line)["name"]  # type: ignore[index]
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no # TYPE"
        assert helps[family] < i and types[family][0] < i, f"{name} sampled before its TYPE"
    kinds = {name: kind for name, (_, kind) in types.items()}
    assert kinds.items() >= {
        "wsctl_reconcile_duration_seconds": "histogram",
        "wsctl_recreates_total": "counter",
        "wsctl_degraded_workspaces": "gauge",
        "wsctl_register_failures_total": "counter",
        "wsctl_agent_auth_failures_total": "counter",
        "wsctl_queue_depth": "gauge",
        "wsctl_workspaces": "gauge",
        "wsctl_reconcile_errors_total": "counter",
        "wsctl_docker_api_calls_total": "counter",
    }.items()
    assert all(kind != "counter" or name.endswith("_total") for name, kind in kinds.items())


def test_labelled_and_plain_values() -> None:
    by_key = {(name, tuple(sorted(labels.items()))): value
              for name, labels, value in samples(render(metrics()))}
    assert by_key[("wsctl_recreates_total", (("reason", "Created"),))] == "5"
    assert by_key[("wsctl_register_failures_total", (("class", "blocked_private_url"),))] == "3"
    assert by_key[("wsctl_agent_auth_failures_total", (("class", "stale_token"),))] == "4"
    assert by_key[("wsctl_degraded_workspaces", (("reason", "RegisterFailed"),))] == "1"
    assert by_key[("wsctl_docker_api_calls_total", (("call", "list"),))] == "300"
    assert by_key[("wsctl_docker_api_calls_total", (("call", "inspect"),))] == "21"
    assert by_key[("wsctl_queue_depth", ())] == "2"


def test_large_counters_keep_every_digit() -> None:
    """A counter of 1234567 must not be rendered as 1.23457e+06 (it would look stuck)."""
    text = render(metrics(db_queries=1_234_567, workspaces=10_000_001, queue_depth=0))
    values = {name: value for name, labels, value in samples(text) if not labels}
    assert float(values["wsctl_db_queries_total"]) == 1_234_567
    assert float(values["wsctl_workspaces"]) == 10_000_001
    assert float(values["wsctl_queue_depth"]) == 0


def test_rate_limited_registry_requests_are_one_unlabelled_counter() -> None:
    """No per-source label: the set of source addresses is unbounded."""
    text = render(metrics(auth_rate_limited=17))
    found = [(labels, value) for name, labels, value in samples(text)
             if name == "wsctl_registry_auth_rate_limited_total"]
    assert found == [({}, "17")]
    assert "# TYPE wsctl_registry_auth_rate_limited_total counter" in text
