"""`wsctl run`: wires store, engine, reconciler, driver and the two HTTP listeners.

The composition root: the one place that knows every adapter. Two listeners:
the admin/CLI API on --listen (default 127.0.0.1:8080, admin token required)
and the agent registry on the workspace network's gateway address, which
containers reach as host.docker.internal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from controller.adapters.docker_engine import DockerEngine
from controller.adapters.postgres import QUERY_COUNT, Store
from controller.api.a2a import A2AProxy
from controller.api.admin import AdminApi, admin_auth, json_errors
from controller.api.egress_proxy import EgressMetrics, EgressProxy
from controller.api.exec import ExecApi
from controller.api.files import FilesApi
from controller.api.llm_gateway import LlmGateway
from controller.api.llm_metrics import GatewayMetrics
from controller.api.metrics import ControllerMetrics, Counts, Levels, degraded_by_reason
from controller.api.registry import Registry
from controller.api.streams import Streams
from controller.api.wake import Waker
from controller.api.watch import WatchHub
from controller.app.egress import EgressAccess
from controller.app.egress import resolver as egress_resolver
from controller.app.llm import LlmAccess, key_resolver
from controller.app.preview import preview
from controller.app.retention import RetentionTask
from controller.app.wiring import (
    SERVER_FILE,
    EngineLookups,
    RunOptions,
    debug_knobs,
    engine_and_store,
    ensure_admin_token,
)
from controller.core import manifests
from controller.core.activity import RecentActivity
from controller.core.model import Workspace, WorkspaceKey
from controller.core.secretsource import env_name, resolve, secret_refs
from controller.core.settings import PlatformSettings
from controller.drivers.probes import Prober
from controller.drivers.standalone import StandaloneDriver
from controller.reconcile.execute import Executor
from controller.reconcile.reconciler import Metrics, Reconciler

log = logging.getLogger("wsctl.run")

DEMO_MANIFEST = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


class Controller:
    """A running controller; `serve()` until the stop event is set."""

    def __init__(self, options: RunOptions, progress: Callable[[str], None]) -> None:
        self.options = options
        self.progress = progress
        self.ready = False
        self.driver: StandaloneDriver | None = None
        self.store: Store | None = None
        self.engine: DockerEngine | None = None

    async def serve(self, stop: asyncio.Event) -> None:
        opts = self.options
        admin_token = ensure_admin_token(opts.data_dir)
        async with engine_and_store(opts, self.progress) as (engine, gateway, settings, store):
            self.engine, self.store = engine, store
            await self._serve_with(store, engine, settings, gateway, admin_token, stop)

    async def _serve_with(self, store: Store, engine: DockerEngine, settings: PlatformSettings,
                          gateway: str, admin_token: str, stop: asyncio.Event) -> None:
        opts = self.options

        a2a_key = await store.controller_key("a2a")
        lookups = EngineLookups(engine, a2a_key)
        # Test knobs (controller.testing) are imported only when one is set.
        breaks = debug_knobs(opts.environ)
        proxy = A2AProxy(breaks.activity_store(store) if breaks else store,
                         breaks.agent_address(lookups.agent_address) if breaks
                         else lookups.agent_address)
        executor = Executor(engine, store, host_gateway=gateway,
                            deliver=proxy.deliver_restart_context, a2a_key=a2a_key)
        executor = breaks.executor(executor) if breaks else executor
        exporter = ControllerMetrics(queue_depth=lambda: driver.queue.depth)
        in_flight = RecentActivity()
        reconciler = Reconciler(store, engine, executor, settings, opts.environ,
                                clock=lambda: datetime.now(UTC),
                                metrics=Metrics(on_duration=exporter.observe_reconcile),
                                activity=in_flight)
        watches = WatchHub()  # GET /api/v1/workspaces?watch=true
        event_watches = WatchHub()  # GET /api/v1/events?watch=true: woken by each event
        store.on_event = event_watches.changed
        driver = StandaloneDriver(breaks.driver_store(store) if breaks else store, engine,
                                  reconciler, executor, workers=opts.workers,
                                  resync_seconds=opts.resync_seconds,
                                  on_status=lambda key: watches.changed(key.id))
        self.driver = driver
        registry = Registry(breaks.registry_store(store) if breaks else store, lookups.identity,
                            driver.on_registry_event,
                            stale_after=settings.heartbeat_ttl_seconds)
        # Silence the registry could not hear (before it started, while the database
        # was away) is not held against an agent's startup or liveness timeout.
        reconciler.hearing_since = lambda: registry.hearing_since
        # protocol none: the controller's probes; a change of verdict wakes a reconcile.
        prober = Prober(engine.run_probe, driver.on_registry_event)
        reconciler.probes = prober

        exporter.counts = lambda: Counts.of(
            reconciler.metrics, registry.counters, docker_calls=engine.calls_by_name,
            db_queries=QUERY_COUNT, resyncs=driver.stats.resyncs)

        llm_metrics = GatewayMetrics(exporter.registry)

        async def render_metrics() -> str:
            workspaces = await store.list_workspaces()
            known = {ws.key.id for ws in workspaces}.__contains__
            llm_metrics.forget_unknown(known)
            egress.metrics.forget_unknown(known)
            return exporter.render(Levels(
                workspaces=len(workspaces),
                degraded=degraded_by_reason(ws.status for ws in workspaces)))

        waker = Waker(store, driver.on_registry_event, driver.reconciled,
                      observe=exporter.observe_wake)
        # exec, cp and logs -f: the agent's uid in the newest running container. An exec
        # or a copy wakes a suspended workspace, and keeps it from idling while it runs.
        streams = Streams(store, lookups, busy=in_flight.request,
                          wake=lambda ws: waker.ensure_awake(ws, "an exec or copy arrived"))
        # The secrets a workspace's projection needs, resolved as the reconcile does.
        async def secrets_of(ws: Workspace) -> dict[tuple[str, str], str]:
            return await resolve(secret_refs([ws]), opts.environ, store.get_secrets)

        admin = AdminApi(store, proxy, lookups.logs, lambda: self.ready, render_metrics,
                         follow_logs=streams.follow_logs,
                         volumes=lookups.volumes, waker=waker, activity=in_flight,
                         watch=watches, event_watch=event_watches,
                         preview=lambda current, wanted: preview(current, wanted, secrets_of,
                                                                 settings))
        admin_app = web.Application(middlewares=[json_errors, admin_auth(admin_token)],
                                    client_max_size=1024 * 1024)
        admin_app.add_routes(admin.routes())
        admin_app.add_routes([*ExecApi(streams).routes(), *FilesApi(streams).routes()])
        registry_app = web.Application(client_max_size=64 * 1024)
        registry_app.add_routes(registry.routes())
        # The LLM gateway: on the registry listener only (the one address containers
        # reach), with the registry's failed-auth budget per source.
        async def find(key: WorkspaceKey) -> Workspace | None:
            return await store.get_workspace(key.namespace, key.name)

        llm_access = LlmAccess(find, key_resolver(secrets_of), store,
                               lambda key: driver.on_registry_event(key.id))
        # The egress proxy (allowlist workspaces), beside the registry on the gateway.
        egress = EgressAccess(find, engine.list_containers, store,
                              EgressMetrics(exporter.registry))
        egress_proxy = EgressProxy(egress.lookup, egress.observe,
                                   resolve=egress_resolver(opts.environ))

        # A changed workspace (a budget raise, a narrower allow list) is seen by its
        # next call or connection, not a TTL later.
        def changed(key: WorkspaceKey | None = None) -> None:
            llm_access.forget(None if key is None else key.id)
            egress.forget(None if key is None else key.id)
            watches.changed(None if key is None else key.id)
        await store.listen_workspace_changes(changed, on_reconnect=changed)
        llm_gateway = LlmGateway(store, llm_access, llm_access, llm_access,
                                 metrics=llm_metrics,
                                 limiter=registry.limiter,
                                 host_aliases={"host.docker.internal": gateway})
        registry_app.add_routes(llm_gateway.routes())

        # History and retired tokens pruned every few minutes, beside the reconciles.
        retention = RetentionTask(store, opts.retention,
                                  interval=opts.retention_interval_seconds)
        runners: list[web.AppRunner] = []
        try:
            for app, host, port in (
                (admin_app, opts.listen_host, opts.listen_port),
                (registry_app, opts.registry_host or gateway, opts.registry_port),
            ):
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(runner, host, port).start()
            await egress_proxy.start(opts.registry_host or gateway, opts.egress_proxy_port)
            if opts.demo:
                runners.append(await self._start_demo(store, gateway))
            self._write_server_file(opts)
            await driver.start()
            retention.start()
            self.ready = True
            self.progress(f"wsctl controller ready: API http://{opts.listen_host}:"
                          f"{opts.listen_port}, registry http://{opts.registry_host or gateway}:"
                          f"{opts.registry_port} (containers: {settings.registry_url})")
            await stop.wait()
        finally:
            self.ready = False
            self.progress("wsctl controller stopping")
            await retention.stop()
            await driver.stop()
            await prober.close()
            await proxy.close()
            await llm_gateway.close()
            await egress_proxy.close()
            for runner in reversed(runners):
                await runner.cleanup()
            await llm_access.close()  # the usage of the last calls, written
            await egress.close()
            with contextlib.suppress(FileNotFoundError):
                (opts.data_dir / SERVER_FILE).unlink()

    async def _start_demo(self, store: Store, gateway: str) -> web.AppRunner:
        """Serve the fake LLM where containers reach it and declare the demo workspace."""
        from controller.testing.fake_llm import FakeLLM

        key = "demo-" + secrets.token_urlsafe(24)
        self.options.environ[env_name("demo-llm", "api-key")] = key
        llm = FakeLLM(api_key=key)
        runner = web.AppRunner(llm.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, gateway, self.options.demo_llm_port).start()
        documents = manifests.load([DEMO_MANIFEST])
        for ws in manifests.workspaces(documents):
            if await store.get_workspace(ws.metadata.namespace, ws.metadata.name) is None:
                await store.apply_workspace(ws)
        self.progress(f"demo: fake LLM on http://{gateway}:{self.options.demo_llm_port}, "
                      f"workspace from {DEMO_MANIFEST.name} applied")
        return runner

    @staticmethod
    def _write_server_file(opts: RunOptions) -> None:
        path = opts.data_dir / SERVER_FILE
        path.write_text(json.dumps({
            "url": f"http://{opts.listen_host}:{opts.listen_port}", "pid": os.getpid()}))
