"""/metrics: the controller's Prometheus exposition, made by prometheus_client.

One `ControllerMetrics` per controller, each with its own `CollectorRegistry`
(never the library's process-global default), so two controllers in one
process, and the tests, share no state. What it exports:

- `wsctl_reconcile_duration_seconds`: a `Histogram`, observed once per
  reconcile (the reconciler's `Metrics.on_duration` points at
  `observe_reconcile`). It keeps bucket counts, a sum and a count, no samples.
- the `wsctl_*_total` counters: read at scrape time from the tallies the
  reconciler, the agent registry, the driver, the Docker engine and the store
  keep anyway (`Counts`; each of them only grows), by a custom collector, so
  none of those layers imports an exporter.
- the gauges `wsctl_workspaces`, `wsctl_degraded_workspaces{reason}` and
  `wsctl_queue_depth`: set from `Levels` at each scrape (the queue depth from a
  callback).

Kubernetes mode serves the same on its own listener, with `/healthz` and
`/readyz` (`routes`); standalone mode serves it behind the admin token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from controller.api.registry import RegistryCounters
from controller.core import origin
from controller.core.model import WorkspaceStatus
from controller.reconcile.reconciler import Metrics as ReconcileMetrics

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WAKE_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 180.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class Counts:
    """The counters' values now. Every one only grows for the life of the process."""

    recreates: Mapping[str, int] = field(default_factory=dict)
    register_failures: Mapping[str, int] = field(default_factory=dict)
    auth_failures: Mapping[str, int] = field(default_factory=dict)
    reconcile_errors: int = 0
    docker_calls: Mapping[str, int] = field(default_factory=dict)
    db_queries: Mapping[str, int] = field(default_factory=dict)
    """SQL statements sent, by origin (`controller.core.origin`)."""
    heartbeats: int = 0
    resyncs: int | None = 0
    """None: not exported (Kubernetes mode has no fleet-wide resync pass)."""
    auth_rate_limited: int = 0
    token_refreshes: int = 0
    a2a_refused: int = 0
    protocol_refused: int = 0

    @classmethod
    def of(cls, reconcile: ReconcileMetrics, registry: RegistryCounters, *,
           docker_calls: Mapping[str, int], db_queries: Mapping[str, int],
           resyncs: int | None) -> Counts:
        """What both composition roots export: the reconciler's and the registry's
        tallies, Docker calls by name, SQL statements sent by origin, full resync
        passes."""
        return cls(recreates=dict(reconcile.recreates),
                   register_failures=dict(registry.register_failures),
                   auth_failures=dict(registry.auth_failures),
                   reconcile_errors=reconcile.errors, docker_calls=dict(docker_calls),
                   db_queries=dict(db_queries), heartbeats=registry.heartbeats, resyncs=resyncs,
                   auth_rate_limited=registry.auth_rate_limited,
                   token_refreshes=reconcile.token_refreshes,
                   a2a_refused=registry.a2a_refused,
                   protocol_refused=registry.protocol_refused)


@dataclass(frozen=True)
class Levels:
    """The gauges' values now (read from the store or the operator at each scrape)."""

    workspaces: int = 0
    degraded: Mapping[str, int] = field(default_factory=dict)


def degraded_by_reason(statuses: Iterable[WorkspaceStatus | None]) -> dict[str, int]:
    """How many of these statuses have Degraded=True, by the condition's reason."""
    found: dict[str, int] = {}
    for status in statuses:
        condition = status.condition("Degraded") if status else None
        if condition is not None and condition.status == "True":
            found[condition.reason] = found.get(condition.reason, 0) + 1
    return found


def _counter(name: str, help_: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_, value=value)


def _by_label(name: str, help_: str, label: str,
              values: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class _CountsCollector:
    """The counters, read from `counts()` at each scrape (no state of its own)."""

    def __init__(self, owner: ControllerMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        c = self.owner.counts()
        yield _by_label("wsctl_recreates_total", "Containers (re)created, by reason.",
                        "reason", c.recreates)
        yield _by_label("wsctl_register_failures_total",
                        "Refused agent registrations, by class.", "class", c.register_failures)
        yield _by_label("wsctl_agent_auth_failures_total", "Refused agent tokens, by class.",
                        "class", c.auth_failures)
        yield _counter("wsctl_registry_auth_rate_limited_total",
                       "Agent registry requests refused 429: their source failed auth too "
                       "often.", c.auth_rate_limited)
        yield _counter("wsctl_token_refreshes_total",
                       "Agent tokens refreshed in place (spec.tokenExpirationSeconds).",
                       c.token_refreshes)
        yield _counter("wsctl_reconcile_errors_total", "Reconciles that failed.",
                       c.reconcile_errors)
        yield _by_label("wsctl_docker_api_calls_total", "Docker API calls made, by call.",
                        "call", c.docker_calls)
        yield _by_label("wsctl_db_queries_total",
                        "SQL statements sent to PostgreSQL, by the origin of the work that "
                        "sent them (resync, reconcile, registry, api, metrics, retention, "
                        "other).", "origin", c.db_queries)
        if c.resyncs is not None:
            yield _counter("wsctl_resyncs_total", "Full resync passes.", c.resyncs)
        yield _counter("wsctl_agent_heartbeats_total", "Accepted agent heartbeats.",
                       c.heartbeats)
        yield _counter("wsctl_agent_a2a_refused_total", "Requests agents refused on their "
                       "A2A port for want of the controller's credential (from heartbeats).",
                       c.a2a_refused)
        yield _counter("wsctl_registry_protocol_refused_total",
                       "Agent registry requests refused 400: they named an agent protocol "
                       "version this controller does not speak (X-Wsctl-Agent-Protocol).",
                       c.protocol_refused)


class WithoutCreated:
    """A metric without its `_created` samples (timestamp series the hand-written
    exposition never had, and the rest of /metrics has none)."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self.metric = metric

    def collect(self) -> Iterator[Metric]:
        for family in self.metric.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


def forget_workspaces(metric: Counter | Histogram, names: tuple[str, ...],
                      exists: Callable[[str], bool], keep: str = "-") -> int:
    """Remove every label set of `metric` whose first label (`names[0]`, a workspace
    id) names a workspace for which `exists` is false; the count removed. `keep` is
    the placeholder for "no workspace", never removed."""
    present = {tuple(sample.labels[n] for n in names)
               for family in metric.collect() for sample in family.samples}
    dropped = 0
    for labels in present:
        if labels[0] != keep and not exists(labels[0]):
            metric.remove(*labels)
            dropped += 1
    return dropped


class ControllerMetrics:
    """The metrics of one controller, in a registry of its own."""

    def __init__(self, *, queue_depth: Callable[[], int] | None = None) -> None:
        """`queue_depth`: read at each scrape; None (Kubernetes mode: no work queue, no
        wake-on-request) leaves `wsctl_queue_depth` and `wsctl_wake_seconds` out."""
        self.registry = CollectorRegistry()
        self.counts: Callable[[], Counts] = Counts
        """Where the counters come from; the composition root points it at the live tallies."""
        self.reconcile_duration = Histogram(
            "wsctl_reconcile_duration_seconds", "Time for one reconcile of one workspace.",
            buckets=BUCKETS, registry=None)
        self.registry.register(WithoutCreated(self.reconcile_duration))
        self.wake_duration = Histogram(
            "wsctl_wake_seconds", "Time from a request waking a suspended workspace to the "
            "workspace Online again (the request is then forwarded).",
            buckets=WAKE_BUCKETS, registry=None)
        if queue_depth is not None:
            self.registry.register(WithoutCreated(self.wake_duration))
        self.registry.register(_CountsCollector(self))
        self.degraded = Gauge("wsctl_degraded_workspaces",
                              "Workspaces with Degraded=True, by reason.", ["reason"],
                              registry=self.registry)
        self.workspaces = Gauge("wsctl_workspaces", "Declared workspaces.",
                                registry=self.registry)
        self.queue_depth: Gauge | None = None
        if queue_depth is not None:
            self.queue_depth = Gauge("wsctl_queue_depth", "Workspaces waiting in the work queue.",
                                     registry=self.registry)
            self.queue_depth.set_function(queue_depth)

    def observe_reconcile(self, seconds: float) -> None:
        self.reconcile_duration.observe(seconds)

    def observe_wake(self, seconds: float) -> None:
        self.wake_duration.observe(seconds)

    def render(self, levels: Levels) -> str:
        """The exposition now, with the gauges set from `levels` first."""
        self.workspaces.set(levels.workspaces)
        self.degraded.clear()  # a reason no workspace has any more is not sampled
        for reason, count in levels.degraded.items():
            self.degraded.labels(reason).set(count)
        return generate_latest(self.registry).decode()


def routes(metrics: Callable[[], Awaitable[str]], ready: Callable[[], bool]
           ) -> list[web.RouteDef]:
    """/metrics, /healthz and /readyz without a token: Kubernetes mode's HTTP listener
    (standalone mode serves the same paths on the admin API)."""

    async def get_metrics(request: web.Request) -> web.Response:
        with origin.working_for(origin.METRICS):
            text = await metrics()
        return web.Response(text=text, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "starting"}, status=503)

    return [web.get("/metrics", get_metrics), web.get("/healthz", healthz),
            web.get("/readyz", readyz)]
