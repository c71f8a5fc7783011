"""/metrics by prometheus_client: every name and label set of the hand-written
exposition it replaced, histogram buckets, counters that never go backwards (the
old histogram dropped its oldest 5,000 samples at 10,000), one registry per
controller. Read back with the library's own parser."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from controller.api.metrics import (
    BUCKETS,
    CONTENT_TYPE,
    ControllerMetrics,
    Counts,
    Levels,
    degraded_by_reason,
    routes,
)
from controller.api.registry import RegistryCounters
from controller.core.model import WorkspaceStatus
from controller.core.settings import PlatformSettings
from controller.reconcile.execute import Executor
from controller.reconcile.reconciler import Metrics, Reconciler
from tests.exposition import Exposition, never_decreased, parse
from tests.unit.fakes import FakeEngine, FakeStore
from tests.unit.helpers import workspace

SECONDS = [0.001, 0.005, 0.02, 0.3, 0.3, 1.0, 7.0, 45.0]

# Every family the hand-written exposition served, with its type and label names.
FAMILIES = {
    "wsctl_reconcile_duration_seconds": ("histogram", set()),
    "wsctl_recreates_total": ("counter", {"reason"}),
    "wsctl_degraded_workspaces": ("gauge", {"reason"}),
    "wsctl_register_failures_total": ("counter", {"class"}),
    "wsctl_agent_auth_failures_total": ("counter", {"class"}),
    "wsctl_registry_auth_rate_limited_total": ("counter", set()),
    "wsctl_token_refreshes_total": ("counter", set()),
    "wsctl_queue_depth": ("gauge", set()),
    "wsctl_workspaces": ("gauge", set()),
    "wsctl_reconcile_errors_total": ("counter", set()),
    "wsctl_docker_api_calls_total": ("counter", {"call"}),
    "wsctl_db_queries_total": ("counter", {"origin"}),
    "wsctl_resyncs_total": ("counter", set()),
    "wsctl_agent_heartbeats_total": ("counter", set()),
    "wsctl_agent_a2a_refused_total": ("counter", set()),
    "wsctl_registry_protocol_refused_total": ("counter", set()),
    "wsctl_wake_seconds": ("histogram", set()),
}


def counts(**overrides: Any) -> Counts:
    values: dict[str, Any] = {
        "recreates": {"ConfigChanged": 2, "Created": 5},
        "register_failures": {"blocked_private_url": 3},
        "auth_failures": {"stale_token": 4},
        "reconcile_errors": 1, "docker_calls": {"list": 300, "inspect": 21},
        "db_queries": {"reconcile": 70, "resync": 7}, "heartbeats": 12, "resyncs": 3,
        "auth_rate_limited": 0,
        "token_refreshes": 0,
    }
    values.update(overrides)
    return Counts(**values)


def exporter(seconds: list[float] | None = None, depth: int = 2, **overrides: Any
             ) -> ControllerMetrics:
    m = ControllerMetrics(queue_depth=lambda: depth)
    for s in SECONDS if seconds is None else seconds:
        m.observe_reconcile(s)
    now = counts(**overrides)
    m.counts = lambda: now
    return m


def scrape(m: ControllerMetrics, levels: Levels | None = None) -> Exposition:
    return parse(m.render(levels or Levels(workspaces=6, degraded={"RegisterFailed": 1})))


def buckets(e: Exposition) -> list[tuple[str, float]]:
    got = [(dict(labels)["le"], value) for labels, value
           in e.labelled("wsctl_reconcile_duration_seconds_bucket").items()]
    return sorted(got, key=lambda item: float(item[0]))


def test_every_family_of_the_hand_written_exposition_with_its_type_and_labels() -> None:
    e = scrape(exporter())
    assert e.types == {name: kind for name, (kind, _) in FAMILIES.items()}
    assert all(e.helps[name] for name in FAMILIES)
    for name, (_, labels) in FAMILIES.items():
        series = [pairs for sample, pairs in e.values
                  if sample in (name, f"{name}_bucket", f"{name}_sum", f"{name}_count")]
        assert series, f"{name} has no sample"
        assert {k for pairs in series for k, _ in pairs} - {"le"} == labels, name
    sample_names = {name for name, _ in e.values}
    assert not [n for n in sample_names if n.endswith("_created")]  # no new series


def test_histogram_buckets_are_cumulative_and_inf_is_count() -> None:
    e = scrape(exporter())
    got = buckets(e)
    assert [float(le) for le, _ in got] == [*BUCKETS, float("inf")]
    counts_ = [c for _, c in got]
    assert counts_ == sorted(counts_)  # cumulative: never decreases
    for (le, count), bound in zip(got, BUCKETS, strict=False):
        assert count == sum(1 for s in SECONDS if s <= bound), le
    assert got[-1][1] == e.value("wsctl_reconcile_duration_seconds_count") == 8
    assert e.value("wsctl_reconcile_duration_seconds_sum") == pytest.approx(sum(SECONDS))
    by_bound = {float(le): c for le, c in got}
    assert by_bound[0.005] == 2  # a value on a bound counts in that bucket
    assert by_bound[30.0] == 7   # 45 s is only in +Inf


def test_empty_histogram() -> None:
    e = scrape(exporter(seconds=[]))
    assert all(count == 0 for _, count in buckets(e))
    assert e.value("wsctl_reconcile_duration_seconds_count") == 0
    assert e.value("wsctl_reconcile_duration_seconds_sum") == 0


def test_more_than_10000_reconciles_all_counted_and_never_backwards() -> None:
    """The old bug: at 10,000 samples the oldest 5,000 were dropped, so _count and
    _sum fell. Through the reconciler's Metrics, as `wsctl run` wires it."""
    m = exporter(seconds=[])
    tallies = Metrics(on_duration=m.observe_reconcile)
    before = scrape(m)
    total = 0
    for _ in range(25):
        for _ in range(500):
            tallies.observe_duration(0.002)
            total += 1
        after = scrape(m)
        assert never_decreased(before, after) == []
        assert after.value("wsctl_reconcile_duration_seconds_count") == total
        before = after
    assert total == 12_500
    assert before.value("wsctl_reconcile_duration_seconds_sum") == pytest.approx(25.0)
    assert before.value("wsctl_reconcile_duration_seconds_bucket", le="0.005") == total


async def test_each_reconcile_is_observed_once_even_when_it_fails() -> None:
    m = exporter(seconds=[])
    engine = FakeEngine(fail_on="list_containers")
    store = FakeStore()
    executor = Executor(engine, store, host_gateway="gw")
    reconciler = Reconciler(store, engine, executor, PlatformSettings(), {},  # type: ignore[arg-type]
                            clock=lambda: datetime.now(UTC),
                            metrics=Metrics(on_duration=m.observe_reconcile))
    for n in range(1, 4):
        with pytest.raises(RuntimeError, match="engine says no"):
            await reconciler.reconcile(workspace("bob", model="MiniMax-M3"), None)
        assert scrape(m).value("wsctl_reconcile_duration_seconds_count") == n


def test_counters_read_at_scrape_time_never_decrease_as_they_grow() -> None:
    m = ControllerMetrics(queue_depth=lambda: 0)
    reconcile = Metrics(on_duration=m.observe_reconcile)
    registry = RegistryCounters()
    docker_calls: dict[str, int] = {}
    queries = {"reconcile": 0, "api": 0}
    m.counts = lambda: Counts.of(reconcile, registry, docker_calls=docker_calls,
                                 db_queries=queries, resyncs=None)
    before = scrape(m)
    for i in range(1, 40):
        reconcile.recreates[f"R{i % 3}"] = reconcile.recreates.get(f"R{i % 3}", 0) + 1
        reconcile.errors += i % 2
        reconcile.token_refreshes += 1
        reconcile.observe_duration(i / 10)
        registry.heartbeats += 3
        registry.auth_failures["stale_token"] = i
        registry.register_failures[f"c{i % 4}"] = registry.register_failures.get(
            f"c{i % 4}", 0) + 1
        registry.auth_rate_limited += i % 3
        registry.protocol_refused += i % 2
        docker_calls["inspect"] = docker_calls.get("inspect", 0) + 2
        queries["reconcile"] += 5
        queries["api"] += i % 2
        after = scrape(m)
        assert never_decreased(before, after) == []
        before = after
    assert before.value("wsctl_recreates_total", reason="R0") == 13
    assert before.value("wsctl_token_refreshes_total") == 39
    assert before.value("wsctl_agent_heartbeats_total") == 117
    assert before.value("wsctl_registry_protocol_refused_total") == 20
    assert before.value("wsctl_register_failures_total", **{"class": "c1"}) == 10
    assert before.value("wsctl_docker_api_calls_total", call="inspect") == 78
    assert before.value("wsctl_db_queries_total", origin="reconcile") == 195
    assert before.value("wsctl_db_queries_total", origin="api") == 20
    assert before.value("wsctl_reconcile_duration_seconds_count") == 39
    assert "wsctl_resyncs_total" not in before.types  # None: not exported


def test_never_decreased_catches_a_counter_that_went_back() -> None:
    """The check the monotonicity tests rely on: a smaller or missing sample is named."""
    up = scrape(exporter(db_queries={"api": 10}, recreates={"Created": 3}))
    down = scrape(exporter(db_queries={"api": 9}, recreates={}))
    problems = never_decreased(up, down)
    assert any("wsctl_db_queries_total" in p for p in problems)
    assert any("Created" in p for p in problems)
    assert never_decreased(down, up) == []


def test_label_values_are_escaped_and_read_back() -> None:
    nasty = 'a"b\\c\nd'
    m = exporter(recreates={nasty: 1})
    text = m.render(Levels())
    assert 'wsctl_recreates_total{reason="a\\"b\\\\c\\nd"} 1.0' in text.splitlines()
    assert parse(text).value("wsctl_recreates_total", reason=nasty) == 1


def test_labelled_and_plain_values() -> None:
    e = scrape(exporter())
    assert e.value("wsctl_recreates_total", reason="Created") == 5
    assert e.value("wsctl_register_failures_total", **{"class": "blocked_private_url"}) == 3
    assert e.value("wsctl_agent_auth_failures_total", **{"class": "stale_token"}) == 4
    assert e.value("wsctl_degraded_workspaces", reason="RegisterFailed") == 1
    assert e.value("wsctl_docker_api_calls_total", call="list") == 300
    assert e.value("wsctl_docker_api_calls_total", call="inspect") == 21
    assert e.value("wsctl_queue_depth") == 2
    assert e.value("wsctl_workspaces") == 6
    assert e.value("wsctl_resyncs_total") == 3


def test_degraded_is_a_level_a_reason_gone_is_not_sampled() -> None:
    m = exporter()
    assert scrape(m, Levels(2, {"RegisterFailed": 1, "HeartbeatStale": 1})).labelled(
        "wsctl_degraded_workspaces") == {(("reason", "RegisterFailed"),): 1,
                                         (("reason", "HeartbeatStale"),): 1}
    assert scrape(m, Levels(2, {"HeartbeatStale": 2})).labelled(
        "wsctl_degraded_workspaces") == {(("reason", "HeartbeatStale"),): 2}


def test_degraded_by_reason_counts_only_degraded_true() -> None:
    def status(degraded: str, reason: str) -> WorkspaceStatus:
        return WorkspaceStatus.model_validate({"conditions": [
            {"type": "Degraded", "status": degraded, "reason": reason,
             "lastTransitionTime": "2030-01-01T00:00:00Z"}]})

    assert degraded_by_reason([status("True", "A"), status("True", "A"), status("False", "B"),
                               None, WorkspaceStatus()]) == {"A": 2}


def test_large_counters_keep_every_digit() -> None:
    """A counter of 1234567 must not read back as 1234570 (it would look stuck)."""
    e = parse(exporter(db_queries={"resync": 1_234_567}, heartbeats=2**40 + 1).render(
        Levels(workspaces=10_000_001)))
    assert e.value("wsctl_db_queries_total", origin="resync") == 1_234_567
    assert e.value("wsctl_agent_heartbeats_total") == 2**40 + 1
    assert e.value("wsctl_workspaces") == 10_000_001


def test_rate_limited_registry_requests_are_one_unlabelled_counter() -> None:
    """No per-source label: the set of source addresses is unbounded."""
    e = scrape(exporter(auth_rate_limited=17))
    assert e.labelled("wsctl_registry_auth_rate_limited_total") == {(): 17}
    assert e.types["wsctl_registry_auth_rate_limited_total"] == "counter"


def test_kubernetes_mode_has_no_queue_and_no_resync_pass() -> None:
    m = ControllerMetrics()
    m.counts = lambda: counts(resyncs=None)
    e = scrape(m)
    assert set(e.types) == set(FAMILIES) - {"wsctl_queue_depth", "wsctl_resyncs_total",
                                            "wsctl_wake_seconds"}


def test_each_controller_has_its_own_registry_not_the_global_one() -> None:
    one, two = exporter(seconds=[0.1, 0.2]), exporter(seconds=[])
    assert scrape(one).value("wsctl_reconcile_duration_seconds_count") == 2
    assert scrape(two).value("wsctl_reconcile_duration_seconds_count") == 0
    assert one.registry is not two.registry
    assert not [f for f in REGISTRY.collect() if f.name.startswith("wsctl_")]


async def test_served_with_the_library_content_type_and_probes() -> None:
    m = exporter()
    ready = [False]

    async def render() -> str:
        return m.render(Levels(workspaces=1))

    app = web.Application()
    app.add_routes(routes(render, lambda: ready[0]))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE
        assert parse(await resp.text()).value("wsctl_workspaces") == 1
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 503
        ready[0] = True
        resp = await client.get("/readyz")
        assert (resp.status, await resp.json()) == (200, {"status": "ready"})
