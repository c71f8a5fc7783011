"""The LLM gateway's Prometheus metrics, in a registry the composition root injects
(the controller's `ControllerMetrics.registry`, so /metrics serves them; never
prometheus_client's process-global default).

- `wsctl_llm_requests_total{workspace, provider, class}`: every gateway request by
  outcome class (`ok`, `invalid_credential`, `budget_exhausted`,
  `upstream_unreachable`, `upstream_server_error`, ...). Requests refused before a
  credential is known count under workspace `-`; an unknown provider in the path
  under provider `unknown`, so a caller cannot create label values at will.
- `wsctl_llm_request_duration_seconds{workspace, provider}`: the time from the
  request to the end of the answer (a stream's whole length).
- `wsctl_llm_tokens_total{workspace, provider, kind}`: kind `input`, `output`,
  `cache_creation`, `cache_read`, as `controller.core.usage.Usage` counts them.

Label sets of a workspace that no longer exists are dropped (`forget_unknown`, run
by the composition root on each scrape), so the series stay bounded by the fleet.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from controller.api.metrics import WithoutCreated, forget_workspaces
from controller.core.usage import Usage

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
NO_WORKSPACE = "-"


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter("wsctl_llm_requests", "LLM gateway requests, by outcome class.",
                                ["workspace", "provider", "class"], registry=None)
        self.duration = Histogram("wsctl_llm_request_duration_seconds",
                                  "LLM gateway requests: time to the end of the answer.",
                                  ["workspace", "provider"], buckets=DURATION_BUCKETS,
                                  registry=None)
        self.tokens = Counter("wsctl_llm_tokens", "Tokens reported by the provider through "
                              "the LLM gateway, by kind (input excludes cache reads).",
                              ["workspace", "provider", "kind"], registry=None)
        for metric in (self.requests, self.duration, self.tokens):
            self.registry.register(WithoutCreated(metric))

    def observe(self, workspace: str | None, provider: str, cls: str, seconds: float,
                usage: Usage) -> None:
        ws = workspace or NO_WORKSPACE
        self.requests.labels(ws, provider, cls).inc()
        self.duration.labels(ws, provider).observe(seconds)
        for kind in ("input", "output", "cache_creation", "cache_read"):
            count = getattr(usage, kind)
            if count:
                self.tokens.labels(ws, provider, kind).inc(count)

    def forget_unknown(self, exists: Callable[[str], bool]) -> int:
        """Drop every label set of a workspace for which `exists(id)` is false (deleted);
        the count of dropped label sets."""
        return sum(forget_workspaces(metric, names, exists, NO_WORKSPACE)
                   for metric, names in ((self.requests, ("workspace", "provider", "class")),
                                         (self.duration, ("workspace", "provider")),
                                         (self.tokens, ("workspace", "provider", "kind"))))
