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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from controller import manifests, redact
from controller.adapters.database import open_store
from controller.adapters.docker_engine import DockerEngine, connect
from controller.adapters.images import ensure_agent_image
from controller.adapters.postgres import QUERY_COUNT, Store
from controller.adapters.secretbox import PrivateFileError, read_private_file
from controller.api import metrics as metrics_text
from controller.api.a2a import A2AProxy
from controller.api.admin import AdminApi, admin_auth, json_errors
from controller.api.registry import Registry
from controller.debug_breaks import DebugBreaks
from controller.devtools.fake_llm import FakeLLM
from controller.drivers.standalone import StandaloneDriver
from controller.execute import Executor
from controller.model import DEFAULT_IMAGE
from controller.observed import ObservedContainer
from controller.reconcile import Reconciler
from controller.secretsource import env_name
from controller.settings import PlatformSettings

log = logging.getLogger("wsctl.run")

ADMIN_TOKEN_FILE = "admin.token"
SERVER_FILE = "server.json"
DEMO_MANIFEST = Path(__file__).resolve().parents[1] / "examples" / "demo.yaml"


@dataclass
class RunOptions:
    data_dir: Path
    cache_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    registry_host: str | None = None  # default: the workspace network's gateway
    registry_port: int = 8081
    database_url: str | None = None
    network: str = "wsctl"
    instance: str = "default"
    heartbeat_seconds: int = 5
    resync_seconds: float = 30.0
    workers: int = 16
    """Workspaces reconciled at once (planning, bookkeeping and waiting on Docker)."""
    docker_parallelism: int = 8
    """Docker API calls in flight at most: the engine's own limit, not the workers'."""
    crash_loop_threshold: int = 3
    build_image: bool = True
    demo: bool = False
    """Also serve the fake LLM on the gateway and apply examples/demo.yaml."""
    demo_llm_port: int = 8090
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))


def ensure_admin_token(data_dir: Path) -> str:
    """The admin token, created (mode 0600) at first start; refused (one line
    naming the path and the mode) if group or others can access it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ADMIN_TOKEN_FILE
    existing = read_private_file(path, "admin token file")
    if existing is not None:
        token = existing.strip()
        if not token:
            raise PrivateFileError(f"admin token file {path} is empty; delete it and "
                                   "start again to get a new one")
        redact.remember(token)
        return token
    token = secrets.token_urlsafe(32)
    redact.remember(token)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


async def prepare_engine(opts: RunOptions, progress: Callable[[str], None]
                         ) -> tuple[DockerEngine, str, PlatformSettings]:
    """Connect to Docker, ensure the workspace network and the agent image; the
    network's gateway is where agents reach the registry. Shared by both modes."""
    # At most --docker-parallelism Docker calls in flight, whatever the number of
    # reconcile workers: a worker busy with bookkeeping (events, status, the look
    # after acting) does not hold a Docker slot another workspace could use.
    engine = DockerEngine(await asyncio.to_thread(connect), instance=opts.instance,
                          max_concurrent_calls=opts.docker_parallelism)
    gateway = await engine.ensure_network(opts.network)
    if opts.build_image and not await engine.image_exists(DEFAULT_IMAGE):
        progress(f"{DEFAULT_IMAGE} not found; building it (first time only)")
        await asyncio.to_thread(ensure_agent_image, engine.client, tag=DEFAULT_IMAGE,
                                cache_dir=opts.cache_dir, progress=progress)
    settings = PlatformSettings(
        registry_url=f"http://host.docker.internal:{opts.registry_port}",
        network=opts.network, heartbeat_seconds=opts.heartbeat_seconds,
        instance=opts.instance, crash_loop_threshold=opts.crash_loop_threshold)
    return engine, gateway, settings


def _newest_running(containers: list[ObservedContainer], workspace_id: str
                    ) -> ObservedContainer | None:
    running = [c for c in containers if c.workspace_id == workspace_id and c.running]
    return max(running, key=lambda c: c.token_generation, default=None)


class EngineLookups:
    """What the API layer asks of Docker about one workspace (both modes)."""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine

    async def _mine(self, workspace_id: str) -> list[ObservedContainer]:
        return await self.engine.list_containers(workspace_id)

    async def agent_address(self, workspace_id: str) -> tuple[str, int] | None:
        """The Docker-published A2A port of the running container: never a claimed URL."""
        current = _newest_running(await self.engine.list_containers(workspace_id), workspace_id)
        if current is None or current.host_port is None:
            return None
        return "127.0.0.1", current.host_port

    async def identity(self, workspace_id: str) -> tuple[set[str], set[str]]:
        """Names and network addresses an agent of this workspace may claim."""
        mine = await self._mine(workspace_id)
        names = {c.name for c in mine} | {c.name[:63] for c in mine}
        return names, {c.ip_address for c in mine if c.ip_address}

    async def logs(self, workspace_id: str, tail: int) -> str | None:
        mine = await self._mine(workspace_id)
        if not mine:
            return None
        newest = max(mine, key=lambda c: c.token_generation)
        return await self.engine.logs(newest.id, tail)


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
        engine, gateway, settings = await prepare_engine(opts, self.progress)
        self.engine = engine
        async with open_store(opts.data_dir, opts.database_url, self.progress,
                              keep_running=False, environ=opts.environ) as store:
            self.store = store
            await self._serve_with(store, engine, settings, gateway, admin_token, stop)

    async def _serve_with(self, store: Store, engine: DockerEngine, settings: PlatformSettings,
                          gateway: str, admin_token: str, stop: asyncio.Event) -> None:
        opts = self.options

        lookups = EngineLookups(engine)
        breaks = DebugBreaks.from_environ(opts.environ)  # test-only; no effect when unset
        breaks.log_secrets(opts.environ)
        proxy = A2AProxy(breaks.activity_store(store), lookups.agent_address)
        executor = breaks.executor(Executor(
            engine, store, host_gateway=gateway, deliver=proxy.deliver_restart_context,
            stall_after=opts.environ.get("WSCTL_DEBUG_STALL_AFTER_OP") or None))
        reconciler = Reconciler(store, engine, executor, settings, opts.environ,
                                clock=lambda: datetime.now(UTC))
        driver = StandaloneDriver(breaks.driver_store(store), engine, reconciler, executor,
                                  workers=opts.workers,
                                  resync_seconds=opts.resync_seconds)
        self.driver = driver
        registry = Registry(breaks.registry_store(store), lookups.identity,
                            driver.on_registry_event,
                            stale_after=settings.heartbeat_ttl_seconds)

        async def render_metrics() -> str:
            workspaces = await store.list_workspaces()
            degraded: dict[str, int] = {}
            for ws in workspaces:
                condition = ws.status.condition("Degraded") if ws.status else None
                if condition is not None and condition.status == "True":
                    degraded[condition.reason] = degraded.get(condition.reason, 0) + 1
            m = reconciler.metrics
            return metrics_text.render(metrics_text.MetricsInput(
                reconcile_seconds=m.reconcile_seconds, recreates=m.recreates,
                degraded=degraded, register_failures=registry.counters.register_failures,
                auth_failures=registry.counters.auth_failures,
                auth_rate_limited=registry.counters.auth_rate_limited,
                queue_depth=driver.queue.depth,
                workspaces=len(workspaces), reconcile_errors=m.errors,
                docker_calls=engine.calls_by_name, db_queries=QUERY_COUNT[0],
                resyncs=driver.stats.resyncs, heartbeats=registry.counters.heartbeats,
                token_refreshes=m.token_refreshes))

        admin = AdminApi(store, proxy, lookups.logs, lambda: self.ready, render_metrics)
        admin_app = web.Application(middlewares=[json_errors, admin_auth(admin_token)],
                                    client_max_size=1024 * 1024)
        admin_app.add_routes(admin.routes())
        registry_app = web.Application(client_max_size=64 * 1024)
        registry_app.add_routes(registry.routes())

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
            if opts.demo:
                runners.append(await self._start_demo(store, gateway))
            self._write_server_file(opts)
            await driver.start()
            self.ready = True
            self.progress(f"wsctl controller ready: API http://{opts.listen_host}:"
                          f"{opts.listen_port}, registry http://{opts.registry_host or gateway}:"
                          f"{opts.registry_port} (containers: {settings.registry_url})")
            await stop.wait()
        finally:
            self.ready = False
            self.progress("wsctl controller stopping")
            await driver.stop()
            await proxy.close()
            for runner in reversed(runners):
                await runner.cleanup()
            with contextlib.suppress(FileNotFoundError):
                (opts.data_dir / SERVER_FILE).unlink()

    async def _start_demo(self, store: Store, gateway: str) -> web.AppRunner:
        """Serve the fake LLM where containers reach it and declare the demo workspace."""
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
