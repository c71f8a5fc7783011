"""Where a chaos run happens: a controller the harness starts, or one already running.

`self_contained()` gives the run its own everything: a temporary data dir (so
its own embedded PostgreSQL), its own Docker network and controller instance
label (so it never touches anyone else's containers), the project's fake LLM
on that network's gateway, and a `wsctl run` subprocess it may SIGKILL and
restart. Everything is removed afterwards. `external()` attaches to a running
controller (found like the CLI finds it); faults that need to own the
controller are then not available.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from controller.adapters.chaos_docker import (
    ChaosEngineError,
    DockerChaos,
    restart_docker_engine,
    restart_embedded_postgres,
    stop_embedded_postgres,
)
from controller.app.client import Client, ClientError
from controller.chaos.api import AdminClient
from controller.chaos.faults import OWNS_CONTROLLER, OWNS_ENGINE, OWNS_POSTGRES
from controller.chaos.process import RunProcess, free_port
from controller.core.errors import WsctlError
from controller.core.settings import default_cache_dir
from controller.testing.fake_llm import FakeLLM

SECRET_NAME, SECRET_KEY = "chaos-llm", "api-key"
SECRET_ENV = "WSCTL_SECRET_CHAOS_LLM_API_KEY"
READY_TIMEOUT = 90.0
# Starts dockerd again after the docker-restart fault (a clean clone has it).
BOOTSTRAP = Path(__file__).resolve().parents[2] / "scripts" / "bootstrap"


class SetupError(WsctlError):
    """The run could not be set up; the message says what is missing."""


@dataclass
class Options:
    """How to reach (or start) the controller; filled from `wsctl chaos run` flags."""

    self_contained: bool = False
    server: str | None = None
    data_dir: Path | None = None
    network: str = "wsctl"
    instance: str = "default"
    registry: str | None = None
    heartbeat_seconds: float = 5.0
    controller_logs: list[Path] = field(default_factory=list)
    docker_restart: bool = False
    docker_start_command: list[str] = field(
        default_factory=lambda: ["bash", str(BOOTSTRAP), "docker"])
    cache_dir: Path | None = None
    keep: bool = False
    namespace: str = "chaos"


@dataclass
class Environment:
    api: AdminClient
    engine: DockerChaos
    pool: ThreadPoolExecutor
    network: str
    namespace: str
    llm_base_url: str
    planted: dict[str, str]
    """Secret values that must never show up: label -> value."""
    heartbeat_seconds: float
    registry: str | None
    capabilities: set[str]
    controller: ControllerProcess | None = None
    data_dir: Path | None = None
    log_files: Callable[[], list[Path]] = list
    docker_start_command: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    async def blocking(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run a blocking (Docker) call on the harness's own thread pool."""
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, lambda: fn(*args, **kw))

    async def restart_postgres(self) -> None:
        assert self.data_dir is not None
        await self.blocking(restart_embedded_postgres, self.data_dir)

    async def restart_docker(self) -> None:
        await self.blocking(restart_docker_engine, self.docker_start_command)

    def log_texts(self) -> dict[str, str]:
        return {str(p): p.read_text(errors="replace") for p in self.log_files() if p.exists()}


@dataclass
class ControllerProcess(RunProcess):
    """The harness's own `wsctl run`; every start appends a log file."""

    heartbeat_seconds: int = 1

    @property
    def server(self) -> str:
        return f"http://{self.listen}"

    async def start(self, extra_env: Mapping[str, str] | None = None) -> None:
        flags = ("--heartbeat-seconds", str(self.heartbeat_seconds), "--resync-seconds", "30",
                 "--verbose")
        log_file = await asyncio.to_thread(self.spawn, flags, extra_env or {})
        await self._wait_ready(log_file)

    async def _wait_ready(self, log_file: Path) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    tail = self.log_text()[-2000:]
                    raise SetupError(f"controller exited {self.proc.returncode}:\n{tail}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with http.get(self.server + "/readyz",
                                        timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)  # polling the controller's readiness
        raise SetupError(f"controller not ready after {READY_TIMEOUT:.0f}s (log {log_file})")

    async def kill(self) -> None:
        await asyncio.to_thread(self.signal_and_wait, signal.SIGKILL)

    async def stop(self) -> None:
        await asyncio.to_thread(self.signal_and_wait, signal.SIGTERM)



async def _serve_fake_llm(host: str, api_key: str) -> tuple[web.AppRunner, int]:
    port = free_port(host)
    runner = web.AppRunner(FakeLLM(api_key=api_key).app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, port


def _temporary_data_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="wsctl-chaos-"))
    path.chmod(0o755)  # the embedded PostgreSQL runs as another user when we are root
    return path


PLANTED_ENV = "WSCTL_CHAOS_PLANTED_SECRET"
"""Test knob: the LLM key value to plant, so a test can grep the run's outputs for it."""


def _planted_key() -> str:
    return os.environ.get(PLANTED_ENV) or "sk-chaos-PLANTED-" + secrets.token_hex(12)


@contextlib.asynccontextmanager
async def self_contained(options: Options, progress: Callable[[str], None]
                         ) -> AsyncIterator[Environment]:
    tag = f"{os.getpid()}{secrets.token_hex(2)}"
    instance, network = f"chaos{tag}", f"wsctl-chaos-{tag}"
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="chaos-docker")
    engine = DockerChaos.open(instance)
    data_dir = _temporary_data_dir()
    llm: web.AppRunner | None = None
    controller: ControllerProcess | None = None
    api: AdminClient | None = None
    try:
        cache = options.cache_dir or default_cache_dir()
        await asyncio.get_running_loop().run_in_executor(
            pool, lambda: engine.ensure_agent_image(cache, progress))
        gateway = await asyncio.get_running_loop().run_in_executor(
            pool, engine.ensure_network, network)
        key = _planted_key()
        llm, llm_port = await _serve_fake_llm(gateway, key)
        heartbeat = max(1, round(options.heartbeat_seconds))
        controller = ControllerProcess(data_dir, network, instance, gateway,
                                       env={**os.environ, SECRET_ENV: key},
                                       heartbeat_seconds=heartbeat)
        progress(f"starting controller (instance {instance}, network {network}, "
                 f"data dir {data_dir})")
        await controller.start()
        api = AdminClient.from_client(Client.from_environment(controller.server, data_dir),
                                   options.namespace)
        capabilities = {OWNS_CONTROLLER, OWNS_POSTGRES}
        if options.docker_restart:
            capabilities.add(OWNS_ENGINE)
        owned = controller
        yield Environment(
            api=api, engine=engine, pool=pool, network=network, namespace=options.namespace,
            llm_base_url=f"http://host.docker.internal:{llm_port}/v1/",
            planted={"llm-api-key": key, "admin-token": api.admin_token},
            heartbeat_seconds=heartbeat, registry=controller.registry,
            capabilities=capabilities, controller=controller, data_dir=data_dir,
            log_files=lambda: list(owned.log_files),
            docker_start_command=options.docker_start_command)
    finally:
        if api is not None:
            await api.close()
        if controller is not None:
            await controller.stop()
        with contextlib.suppress(ChaosEngineError, OSError, subprocess.SubprocessError):
            await asyncio.get_running_loop().run_in_executor(
                pool, stop_embedded_postgres, data_dir)
        with contextlib.suppress(Exception):  # best effort: never mask the run's outcome
            await asyncio.get_running_loop().run_in_executor(
                pool, engine.teardown, network, f"wsctl-{instance}-")
        if llm is not None:
            await llm.cleanup()
        engine.close()
        pool.shutdown(wait=False)
        if options.keep:
            progress(f"kept {data_dir} (controller logs, database)")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def external(options: Options, progress: Callable[[str], None]
                   ) -> AsyncIterator[Environment]:
    from controller.adapters.database import open_store

    if options.data_dir is None:
        raise SetupError("--data-dir is needed to find the controller's admin token")
    try:
        client = Client.from_environment(options.server, options.data_dir)
    except ClientError as exc:
        raise SetupError(str(exc)) from None
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="chaos-docker")
    engine = DockerChaos.open(options.instance)
    api = AdminClient.from_client(client, options.namespace)
    llm: web.AppRunner | None = None
    database_url = os.environ.get("DATABASE_URL")
    key = _planted_key()
    try:
        if not await api.ready():
            raise SetupError(f"no ready wsctl controller answers at {client.server}")
        gateway = engine.gateway(options.network)
        if gateway is None:
            raise SetupError(f"Docker network {options.network} not found (--network)")
        async with open_store(options.data_dir, database_url, progress,
                              keep_running=True) as store:
            await store.set_secret(SECRET_NAME, SECRET_KEY, key)
        llm, llm_port = await _serve_fake_llm(gateway, key)
        capabilities: set[str] = set()
        pgdata = options.data_dir / "postgres" / "postmaster.pid"
        if database_url is None and pgdata.exists():
            capabilities.add(OWNS_POSTGRES)
        if options.docker_restart:
            capabilities.add(OWNS_ENGINE)
        notes = []
        if options.registry is None:
            notes.append("no --registry: stale-token probe skipped")
        if not options.controller_logs:
            notes.append("no --controller-log: controller log lines not scanned for secrets")
        logs = list(options.controller_logs)
        yield Environment(
            api=api, engine=engine, pool=pool, network=options.network,
            namespace=options.namespace,
            llm_base_url=f"http://host.docker.internal:{llm_port}/v1/",
            planted={"llm-api-key": key, "admin-token": client.token},
            heartbeat_seconds=options.heartbeat_seconds, registry=options.registry,
            capabilities=capabilities, data_dir=options.data_dir, log_files=lambda: logs,
            docker_start_command=options.docker_start_command, notes=notes)
    finally:
        await api.close()
        if llm is not None:
            await llm.cleanup()
        with contextlib.suppress(Exception):  # best effort clean-up of the planted secret
            async with open_store(options.data_dir, database_url, keep_running=True) as store:
                await store.delete_secret(SECRET_NAME, SECRET_KEY)
        engine.close()
        pool.shutdown(wait=False)
