"""Prometheus text exposition of the controller's counters. Pure formatting."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class MetricsInput:
    reconcile_seconds: Sequence[float]
    recreates: Mapping[str, int]
    degraded: Mapping[str, int]
    register_failures: Mapping[str, int]
    auth_failures: Mapping[str, int]
    queue_depth: int
    workspaces: int
    reconcile_errors: int
    docker_calls: Mapping[str, int]
    db_queries: int = 0
    heartbeats: int = 0
    resyncs: int = 0
    auth_rate_limited: int = 0
    token_refreshes: int = 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labelled(name: str, help_: str, kind: str, label: str,
              values: Mapping[str, int]) -> Iterable[str]:
    yield f"# HELP {name} {help_}"
    yield f"# TYPE {name} {kind}"
    for key, value in sorted(values.items()):
        yield f'{name}{{{label}="{_escape(key)}"}} {value}'


def _plain(name: str, help_: str, kind: str, value: float) -> Iterable[str]:
    yield f"# HELP {name} {help_}"
    yield f"# TYPE {name} {kind}"
    yield f"{name} {value}"  # not :g, which rounds 1234567 to 1.23457e+06


def render(m: MetricsInput) -> str:
    lines: list[str] = [
        "# HELP wsctl_reconcile_duration_seconds Time for one reconcile of one workspace.",
        "# TYPE wsctl_reconcile_duration_seconds histogram",
    ]
    for bound in BUCKETS:
        count = sum(1 for s in m.reconcile_seconds if s <= bound)
        lines.append(f'wsctl_reconcile_duration_seconds_bucket{{le="{bound:g}"}} {count}')
    lines.append(f'wsctl_reconcile_duration_seconds_bucket{{le="+Inf"}} '
                 f"{len(m.reconcile_seconds)}")
    lines.append(f"wsctl_reconcile_duration_seconds_sum {sum(m.reconcile_seconds):.6f}")
    lines.append(f"wsctl_reconcile_duration_seconds_count {len(m.reconcile_seconds)}")
    lines += _labelled("wsctl_recreates_total", "Containers (re)created, by reason.",
                       "counter", "reason", m.recreates)
    lines += _labelled("wsctl_degraded_workspaces", "Workspaces with Degraded=True, by reason.",
                       "gauge", "reason", m.degraded)
    lines += _labelled("wsctl_register_failures_total", "Refused agent registrations, by class.",
                       "counter", "class", m.register_failures)
    lines += _labelled("wsctl_agent_auth_failures_total", "Refused agent tokens, by class.",
                       "counter", "class", m.auth_failures)
    lines += _plain("wsctl_registry_auth_rate_limited_total",
                    "Agent registry requests refused 429: their source failed auth too often.",
                    "counter", m.auth_rate_limited)
    lines += _plain("wsctl_token_refreshes_total",
                    "Agent tokens refreshed in place (spec.tokenExpirationSeconds).", "counter",
                    m.token_refreshes)
    lines += _plain("wsctl_queue_depth", "Workspaces waiting in the work queue.", "gauge",
                    m.queue_depth)
    lines += _plain("wsctl_workspaces", "Declared workspaces.", "gauge", m.workspaces)
    lines += _plain("wsctl_reconcile_errors_total", "Reconciles that failed.", "counter",
                    m.reconcile_errors)
    lines += _labelled("wsctl_docker_api_calls_total", "Docker API calls made, by call.",
                       "counter", "call", m.docker_calls)
    lines += _plain("wsctl_db_queries_total", "SQL statements sent to PostgreSQL.", "counter",
                    m.db_queries)
    lines += _plain("wsctl_resyncs_total", "Full resync passes.", "counter", m.resyncs)
    lines += _plain("wsctl_agent_heartbeats_total", "Accepted agent heartbeats.", "counter",
                    m.heartbeats)
    return "\n".join(lines) + "\n"
