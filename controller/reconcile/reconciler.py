"""One reconcile of one workspace: observe -> plan -> execute, until nothing is left to do.

Shared by both drivers (standalone loop, kopf operator). It neither reads nor
writes the desired object: the driver passes the Workspace and its last
status in and stores the returned status. Logs one line per decision.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from controller.core import redact
from controller.core.activity import RecentActivity
from controller.core.conditions import DegradedReason, Verdict, apply_verdict
from controller.core.errors import SecretUnreadableError
from controller.core.model import Phase, Workspace, WorkspaceStatus
from controller.core.observed import (
    Observed,
    ObservedContainer,
)
from controller.core.ops import Plan, RefreshToken
from controller.core.plan import plan
from controller.core.projection import Projection, ProjectionError, UnreadableSecret, project
from controller.core.secretsource import resolve, secret_refs
from controller.core.settings import PlatformSettings
from controller.reconcile.execute import ExecuteError, Executor
from controller.reconcile.ports import Engine, ObservationStore, Probes

log = logging.getLogger("wsctl.reconcile")

MAX_PASSES = 4

SecretResolver = Callable[[Workspace], Awaitable[Mapping[tuple[str, str], str]]]
"""workspace -> its resolvable secrets, (secret name, key) -> value."""


@dataclass
class ReconcileResult:
    status: WorkspaceStatus | None  # None once the workspace is purged
    plans: list[Plan] = field(default_factory=list)
    requeue_after: float | None = None
    error: ExecuteError | None = None

    @property
    def purged(self) -> bool:
        return any(p.action == "delete" for p in self.plans) and self.error is None


@dataclass
class Metrics:
    """Counters a driver exposes; plain data so reconcile/ stays free of exporters.

    Every count only grows. A duration goes to `on_duration` (the composition root
    points it at the /metrics histogram); none is kept here."""

    recreates: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    token_refreshes: int = 0
    on_duration: Callable[[float], None] | None = None

    def observe_duration(self, seconds: float) -> None:
        if self.on_duration is not None:
            self.on_duration(seconds)


@dataclass
class Reconciler:
    store: ObservationStore
    engine: Engine
    executor: Executor
    settings: PlatformSettings
    environ: Mapping[str, str]
    clock: Callable[[], datetime]
    metrics: Metrics = field(default_factory=Metrics)
    secret_resolver: SecretResolver | None = None
    """Where secret references resolve; default: the store's secrets and $WSCTL_SECRET_*.
    The operator resolves them from Kubernetes Secrets in the workspace's namespace."""
    hearing_since: Callable[[], datetime | None] = lambda: None
    """Since when the agent registry could hear agents without a break (the registry's
    `hearing_since`); None: no such bound (silence always counts)."""
    activity: RecentActivity | None = None
    """Requests in flight in this process: a workspace answering one is not idle."""
    probes: Probes | None = None
    """Runs spec.readinessProbe / spec.livenessProbe of protocol-none workspaces."""

    async def observe(self, ws: Workspace,
                      containers: list[ObservedContainer] | None = None) -> Observed:
        workspace_id = ws.key.id
        if containers is None:
            containers = await self.engine.list_containers(workspace_id)
        mine = tuple(c for c in containers if c.workspace_id == workspace_id)
        since = self.clock() - timedelta(seconds=self.settings.crash_window_seconds)
        seen = await self.store.observe_registry(workspace_id, since)
        recent = None if self.activity is None else self.activity.last(workspace_id)
        last = max((t for t in (seen.last_activity_at, recent) if t is not None), default=None)
        budgeted = ws.spec.llm is not None and ws.spec.llm.budget is not None
        used = await self.store.llm_tokens_on(
            workspace_id, self.clock().astimezone(UTC).date()) if budgeted else 0
        probed = None
        if self.probes is not None:
            running = [c for c in mine if c.running]
            newest = max(running, key=lambda c: c.token_generation, default=None)
            probed = self.probes.observe(ws, newest)
        return dataclasses.replace(seen, containers=mine, last_activity_at=last,
                                   engine_outages=self.engine.outages(),
                                   heartbeats_since=self.hearing_since(),
                                   llm_tokens_today=used, probes=probed)

    async def project(self, ws: Workspace) -> Projection | ProjectionError:
        refs = secret_refs([ws])
        secrets: dict[tuple[str, str], str] = {}
        if refs and self.secret_resolver is not None:
            secrets = dict(await self.secret_resolver(ws))
        elif refs:
            try:
                secrets = await resolve(refs, self.environ, self.store.get_secrets)
            except SecretUnreadableError as exc:
                return ProjectionError(str(ws.key), [UnreadableSecret(str(exc))])
        redact.remember(*secrets.values())
        try:
            return project(ws, secrets, self.settings)
        except ProjectionError as exc:
            return exc

    async def reconcile(self, ws: Workspace, previous: WorkspaceStatus | None,
                        containers: list[ObservedContainer] | None = None) -> ReconcileResult:
        started = time.monotonic()
        result = ReconcileResult(status=previous)
        projection = await self.project(ws)
        try:
            for _ in range(MAX_PASSES):
                observed = await self.observe(ws, containers)
                containers = None  # after acting, always look again
                decided = plan(ws, projection, observed, result.status, self.clock(),
                               self.settings)
                result.plans.append(decided)
                result.requeue_after = decided.requeue_after
                self._log(ws, decided)
                if decided.ops or decided.events:
                    await self.executor.run(ws.key, decided)
                    self.metrics.token_refreshes += sum(
                        isinstance(op, RefreshToken) for op in decided.ops)
                if decided.recreate_reason is not None:
                    reason = decided.recreate_reason.value
                    self.metrics.recreates[reason] = self.metrics.recreates.get(reason, 0) + 1
                if decided.action == "delete":
                    if self.probes is not None:
                        self.probes.forget(ws.key.id)
                    result.status = None
                    break
                result.status = decided.status
                if not decided.ops:
                    break
        except ExecuteError as exc:
            self.metrics.errors += 1
            log.warning("%s: %s", ws.key, exc)
            result.error = exc
            result.status = failed_status(ws, result.status, exc, self.clock())
        finally:
            elapsed = time.monotonic() - started
            self.metrics.observe_duration(elapsed)
            log.debug("%s: reconciled in %.3fs (%d passes)", ws.key, elapsed, len(result.plans))
        return result

    @staticmethod
    def _log(ws: Workspace, decided: Plan) -> None:
        if decided.action == "none":
            log.debug("%s: in sync (%s)", ws.key, decided.degraded_reason)
            return
        log.info("%s: %s (%s): %d ops", ws.key, decided.action, decided.reason,
                 len(decided.ops))


def failed_status(ws: Workspace, previous: WorkspaceStatus | None, error: ExecuteError,
                  now: datetime) -> WorkspaceStatus:
    """Status after an operation failed: Degraded RecreateFailed naming the operation."""
    previous = previous or WorkspaceStatus()
    message = redact.redact(str(error))[:1000]
    verdict = Verdict(
        ready=("False", DegradedReason.RECREATE_FAILED.value, message),
        degraded=("True", DegradedReason.RECREATE_FAILED.value, message),
        progressing=("False", DegradedReason.RECREATE_FAILED.value, "retrying with back-off"),
    )
    conditions = apply_verdict(previous.conditions, verdict, now, ws.metadata.generation)
    return previous.model_copy(update={"conditions": conditions, "phase": Phase.DEGRADED})
