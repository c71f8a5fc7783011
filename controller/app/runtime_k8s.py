"""`wsctl run --kubernetes`: the composition root of Kubernetes mode.

The same pieces as `runtime.Controller` (Docker engine, store, executor,
reconciler, agent registry, A2A proxy for restart context) with the kopf
operator driver in place of the standalone driver. Desired state and status
live in Kubernetes (`Workspace` custom resources); the store keeps what only
the controller knows: token hashes, registrations, activity, diagnostics and
event history. There is no admin API in this mode: kubectl is the client. On
--listen (default 127.0.0.1:8080) it serves /metrics, /healthz and /readyz,
without a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from controller.adapters.docker_engine import DockerEngine
from controller.adapters.postgres import QUERY_COUNT, Registration, Store, TokenRecord
from controller.api.a2a import A2AProxy
from controller.api.egress_proxy import EgressMetrics, EgressProxy
from controller.api.llm_gateway import LlmGateway
from controller.api.llm_metrics import GatewayMetrics
from controller.api.metrics import ControllerMetrics, Counts, Levels, degraded_by_reason
from controller.api.metrics import routes as metrics_routes
from controller.api.registry import Registry
from controller.app.egress import EgressAccess
from controller.app.egress import resolver as egress_resolver
from controller.app.llm import LlmAccess, key_resolver
from controller.app.retention import RetentionTask
from controller.app.wiring import EngineLookups, RunOptions, engine_and_store
from controller.core import settings as defaults
from controller.core.settings import PlatformSettings
from controller.drivers.operator import OperatorOptions, WorkspaceOperator
from controller.drivers.probes import Prober
from controller.reconcile.execute import Executor
from controller.reconcile.reconciler import Metrics, Reconciler

log = logging.getLogger("wsctl.run")


class KubernetesExecutorStore:
    """The store as the executor sees it in Kubernetes mode.

    Purging a deleted workspace drops its tokens and registration only: there
    is no desired-state row (the Workspace object is Kubernetes')."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def insert_token(self, workspace_id: str, generation: int, token_hash: str,
                           container_id: str | None = None, *,
                           expires_at: datetime | None = None,
                           revoke_others: bool = True) -> TokenRecord:
        return await self.store.insert_token(workspace_id, generation, token_hash, container_id,
                                             expires_at=expires_at, revoke_others=revoke_others)

    async def rotate_token(self, workspace_id: str, generation: int, token_hash: str, *,
                           expires_at: datetime | None) -> TokenRecord:
        return await self.store.rotate_token(workspace_id, generation, token_hash,
                                             expires_at=expires_at)

    async def revoke_tokens(self, workspace_id: str,
                            except_generation: int | None = None) -> int:
        return await self.store.revoke_tokens(workspace_id, except_generation)

    async def put_llm_credential(self, workspace_id: str, generation: int,
                                 credential_hash: str, provider: str,
                                 base_url: str | None) -> object:
        return await self.store.put_llm_credential(workspace_id, generation, credential_hash,
                                                   provider, base_url)

    async def purge_workspace(self, namespace: str, name: str) -> bool:
        await self.store.forget_workspace(f"{namespace}.{name}")
        return True

    async def add_diagnostics(self, workspace_id: str, **kwargs: Any) -> int:
        return await self.store.add_diagnostics(workspace_id, **kwargs)

    async def suspend(self, workspace_id: str, reason: str) -> bool:
        return await self.store.suspend(workspace_id, reason)

    async def add_event(self, workspace_id: str, type_: Any, reason: str, message: str = "",
                        *, at: datetime | None = None) -> object:
        return await self.store.add_event(workspace_id, type_, reason, message, at=at)


class KubernetesRegistryStore:
    """The store as the agent registry sees it in Kubernetes mode: a workspace
    exists when the operator has seen its Workspace object."""

    def __init__(self, store: Store, knows: Callable[[str], bool]) -> None:
        self.store = store
        self.knows = knows

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        return await self.store.find_token(token_hash)

    async def record_register(self, workspace_id: str, url: str, agent_card: Any,
                              token_generation: int, *,
                              at: datetime | None = None) -> Registration:
        return await self.store.record_register(workspace_id, url, agent_card,
                                                token_generation, at=at)

    async def record_register_failure(self, workspace_id: str, cls: str, message: str, *,
                                      at: datetime | None = None) -> Registration:
        return await self.store.record_register_failure(workspace_id, cls, message, at=at)

    async def record_heartbeat(self, workspace_id: str, status: str, *,
                               error_detail: str | None = None,
                               active_tasks: int | None = None,
                               uptime_seconds: float | None = None,
                               at: datetime | None = None,
                               generation: int | None = None) -> Registration:
        return await self.store.record_heartbeat(
            workspace_id, status, error_detail=error_detail, active_tasks=active_tasks,
            uptime_seconds=uptime_seconds, at=at, generation=generation)

    async def record_auth_failure(self, workspace_id: str, cls: str,
                                  generation: int | None) -> None:
        if self.knows(workspace_id):
            await self.store.record_auth_failure(workspace_id, cls, generation, known=True)


class KubernetesController:
    """A running operator; `serve()` until the stop event is set."""

    def __init__(self, options: RunOptions, operator_options: OperatorOptions,
                 progress: Callable[[str], None]) -> None:
        self.options = options
        self.operator_options = operator_options
        self.progress = progress
        self.engine: DockerEngine | None = None
        self.store: Store | None = None
        self.operator: WorkspaceOperator | None = None
        self.registry: Registry | None = None

    async def serve(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        opts = self.options
        async with engine_and_store(opts, self.progress) as (engine, gateway, settings, store):
            self.engine, self.store = engine, store
            await self._serve_with(store, engine, settings, gateway, stop, ready)

    async def _serve_with(self, store: Store, engine: DockerEngine, settings: PlatformSettings,
                          gateway: str, stop: asyncio.Event,
                          ready: asyncio.Event | None) -> None:
        opts = self.options
        # No admin API here to carry a message that would wake a suspended workspace.
        settings = dataclasses.replace(settings, idle_suspend=False)

        a2a_key = await store.controller_key("a2a")
        lookups = EngineLookups(engine, a2a_key)
        proxy = A2AProxy(store, lookups.agent_address)
        executor = Executor(engine, KubernetesExecutorStore(store), host_gateway=gateway,
                            deliver=proxy.deliver_restart_context, a2a_key=a2a_key)
        exporter = ControllerMetrics()  # no work queue: each workspace has its own worker
        reconciler = Reconciler(store, engine, executor, settings, opts.environ,
                                clock=lambda: datetime.now(UTC),
                                metrics=Metrics(on_duration=exporter.observe_reconcile))
        operator = WorkspaceOperator(reconciler, engine, self.operator_options)
        self.operator = operator
        registry = Registry(KubernetesRegistryStore(store, operator.knows), lookups.identity,
                            operator.on_registry_event,
                            stale_after=settings.heartbeat_ttl_seconds)
        # Silence the registry could not hear (before it started, while the database
        # was away) is not held against an agent's startup or liveness timeout.
        reconciler.hearing_since = lambda: registry.hearing_since
        self.registry = registry
        prober = Prober(engine.run_probe, operator.on_registry_event)
        reconciler.probes = prober
        exporter.counts = lambda: Counts.of(
            reconciler.metrics, registry.counters, docker_calls=engine.calls_by_name,
            db_queries=QUERY_COUNT, resyncs=None)

        llm_metrics = GatewayMetrics(exporter.registry)

        async def render_metrics() -> str:
            llm_metrics.forget_unknown(operator.knows)
            egress.metrics.forget_unknown(operator.knows)
            return exporter.render(Levels(
                workspaces=operator.known_workspaces(),
                degraded=degraded_by_reason(operator.known_statuses())))

        ready = ready or asyncio.Event()
        # History and retired tokens pruned every few minutes (by every replica: the
        # deletes are idempotent), beside the reconciles.
        retention = RetentionTask(store, opts.retention,
                                  interval=opts.retention_interval_seconds)
        registry_app = web.Application(client_max_size=64 * 1024)
        registry_app.add_routes(registry.routes())
        # The LLM gateway, as in standalone mode; the key comes from the Kubernetes
        # Secret (the operator's index) at each call.
        # The operator's view of the objects is in memory and current: nothing to cache.
        llm_access = LlmAccess(operator.workspace, key_resolver(operator.resolve_secrets),
                               store, lambda key: operator.trigger(key, "llm-budget"),
                               workspace_ttl=0.0)
        llm_gateway = LlmGateway(store, llm_access, llm_access, llm_access,
                                 metrics=llm_metrics,
                                 limiter=registry.limiter,
                                 host_aliases={"host.docker.internal": gateway})
        registry_app.add_routes(llm_gateway.routes())
        egress = EgressAccess(operator.workspace, engine.list_containers, store,
                              EgressMetrics(exporter.registry), workspace_ttl=0.0)
        egress_proxy = EgressProxy(egress.lookup, egress.observe,
                                   resolve=egress_resolver(opts.environ))
        http_app = web.Application(client_max_size=64 * 1024)
        http_app.add_routes(metrics_routes(
            render_metrics, lambda: ready.is_set() and not stop.is_set()))
        runners: list[web.AppRunner] = []
        try:
            # reuse_port: a standby replica on the same node can bind it too (HA). Not
            # for /metrics: scrapes must reach one process, or counters jump between two.
            for app, host, port, reuse in (
                (registry_app, opts.registry_host or gateway, opts.registry_port, True),
                (http_app, opts.listen_host, opts.listen_port, False),
            ):
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(runner, host, port, reuse_port=reuse).start()
            await egress_proxy.start(opts.registry_host or gateway, opts.egress_proxy_port,
                                     reuse_port=True)
            self.progress(f"wsctl operator starting: registry http://"
                          f"{opts.registry_host or gateway}:{opts.registry_port} "
                          f"(containers: {settings.registry_url}), metrics http://"
                          f"{opts.listen_host}:{opts.listen_port}/metrics, "
                          f"instance {opts.instance}")
            retention.start()
            await operator.run(stop, ready)
        finally:
            self.progress("wsctl operator stopping")
            await retention.stop()
            with contextlib.suppress(Exception):
                await prober.close()
            with contextlib.suppress(Exception):
                await proxy.close()
            with contextlib.suppress(Exception):
                await llm_gateway.close()
            with contextlib.suppress(Exception):
                await egress_proxy.close()
            for runner in reversed(runners):
                await runner.cleanup()
            with contextlib.suppress(Exception):
                await llm_access.close()  # the usage of the last calls, written
            with contextlib.suppress(Exception):
                await egress.close()


def operator_options(args: Mapping[str, Any]) -> OperatorOptions:
    """OperatorOptions from the `wsctl run` flags (as a mapping of their values)."""
    namespaces = tuple(args.get("namespace") or ())
    priority = args.get("peering_priority")
    if priority is None:
        # kopf pauses every replica whose priority equals another's: default to a
        # random one, so replicas of one Deployment differ (the highest acts).
        priority = 1 + secrets.randbelow(1_000_000)
    return OperatorOptions(
        resync_seconds=float(args.get("resync_seconds") or defaults.RESYNC_SECONDS),
        namespaces=namespaces,
        standalone=bool(args.get("no_peering")),
        priority=int(priority),
        liveness_endpoint=args.get("liveness"),
    )


def run_kubernetes(options: RunOptions, operator: OperatorOptions,
                   progress: Callable[[str], None]) -> None:
    """Run the operator in this process until SIGINT/SIGTERM (kopf handles both)."""
    async def main() -> None:
        await KubernetesController(options, operator, progress).serve(asyncio.Event())

    asyncio.run(main())
