"""What both composition roots wire the same way: options, the admin token, the
engine with its network and image, Docker lookups for the API layer, and the
test knobs (imported only when one is set).

`runtime.py` (standalone, `wsctl run`) and `runtime_k8s.py` (`wsctl run
--kubernetes`) build on this; neither imports the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.adapters import hostnet
from controller.adapters.database import open_store
from controller.adapters.docker_engine import DockerEngine, connect
from controller.adapters.docker_streams import ExecStream, LogFollower
from controller.adapters.host_firewall import FirewallError, HostFirewall
from controller.adapters.images import ensure_agent_image
from controller.adapters.postgres import Store
from controller.adapters.secretbox import PrivateFileError, read_private_file
from controller.api.a2a import AgentTarget
from controller.core import redact, tokens
from controller.core import settings as defaults
from controller.core.model import DEFAULT_IMAGE
from controller.core.observed import ObservedContainer
from controller.core.settings import AGENT_UID, PlatformSettings, Retention

if TYPE_CHECKING:
    from controller.testing.debug_breaks import DebugBreaks

ADMIN_TOKEN_FILE = "admin.token"
SERVER_FILE = "server.json"


@dataclass
class RunOptions:
    data_dir: Path
    cache_dir: Path
    listen_host: str = defaults.LISTEN_HOST
    listen_port: int = defaults.API_PORT
    registry_host: str | None = None  # default: the workspace network's gateway
    registry_port: int = defaults.REGISTRY_PORT
    egress_port: int | None = None
    """The egress proxy's port on the registry's address; None: the registry port + 1."""
    database_url: str | None = None
    network: str = defaults.NETWORK
    instance: str = defaults.INSTANCE
    heartbeat_seconds: int = defaults.HEARTBEAT_SECONDS
    resync_seconds: float = defaults.RESYNC_SECONDS
    workers: int = defaults.WORKERS
    """Workspaces reconciled at once (planning, bookkeeping and waiting on Docker)."""
    docker_parallelism: int = defaults.DOCKER_PARALLELISM
    """Docker API calls in flight at most: the engine's own limit, not the workers'."""
    crash_loop_threshold: int = defaults.CRASH_LOOP_THRESHOLD
    retention: Retention = field(default_factory=Retention)
    """What the store keeps (the `RETAIN_*` defaults; `--retain-*` flags)."""
    retention_interval_seconds: float = defaults.RETENTION_INTERVAL_SECONDS
    """Time between retention passes; 0: none."""
    build_image: bool = True
    demo: bool = False
    """Also serve the fake LLM on the gateway and apply examples/demo.yaml."""
    demo_llm_port: int = 8090
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def egress_proxy_port(self) -> int:
        return defaults.egress_port_for(self.registry_port, self.egress_port)


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
        egress_proxy_url=f"http://host.docker.internal:{opts.egress_proxy_port}",
        network=opts.network, heartbeat_seconds=opts.heartbeat_seconds,
        instance=opts.instance, crash_loop_threshold=opts.crash_loop_threshold)
    await engine.ensure_open_network(settings.open_network)
    return engine, gateway, settings


def debug_knobs(environ: Mapping[str, str]) -> DebugBreaks | None:
    """The TEST-ONLY knobs of `environ` (WSCTL_DEBUG_BREAK_*, WSCTL_DEBUG_STALL_AFTER_OP),
    or None when none is set: then controller.testing is not even imported."""
    if not any(name.startswith("WSCTL_DEBUG_BREAK_") or name == "WSCTL_DEBUG_STALL_AFTER_OP"
               for name in environ):
        return None
    from controller.testing.debug_breaks import DebugBreaks

    breaks = DebugBreaks.from_environ(environ)
    breaks.log_secrets(environ)
    return breaks


def _newest_running(containers: list[ObservedContainer], workspace_id: str
                    ) -> ObservedContainer | None:
    running = [c for c in containers if c.workspace_id == workspace_id and c.running]
    return max(running, key=lambda c: c.token_generation, default=None)


class EngineLookups:
    """What the API layer asks of Docker about one workspace (both modes)."""

    def __init__(self, engine: DockerEngine, a2a_key: bytes) -> None:
        self.engine = engine
        self.a2a_key = a2a_key

    async def _mine(self, workspace_id: str) -> list[ObservedContainer]:
        return await self.engine.list_containers(workspace_id)

    async def agent_address(self, workspace_id: str) -> AgentTarget | None:
        """The running container's own address on the workspace network, as Docker
        reports it (never a claimed URL), its A2A port, and the credential its agent
        was given before it started."""
        current = _newest_running(await self.engine.list_containers(workspace_id), workspace_id)
        if current is None or current.ip_address is None:
            return None
        credential = tokens.a2a_credential(self.a2a_key, workspace_id,
                                           current.token_generation, current.id)
        redact.remember_token(credential)
        return AgentTarget(current.ip_address, defaults.AGENT_PORT, credential)

    async def identity(self, workspace_id: str) -> tuple[set[str], set[str]]:
        """Names and network addresses an agent of this workspace may claim."""
        mine = await self._mine(workspace_id)
        names = {c.name for c in mine} | {c.name[:63] for c in mine}
        return names, {c.ip_address for c in mine if c.ip_address}

    async def volumes(self) -> list[dict[str, Any]]:
        return await self.engine.storage_volumes()

    async def logs(self, workspace_id: str, tail: int) -> str | None:
        mine = await self._mine(workspace_id)
        if not mine:
            return None
        newest = max(mine, key=lambda c: c.token_generation)
        return await self.engine.logs(newest.id, tail)

    async def running(self, workspace_id: str) -> bool:
        return _newest_running(await self._mine(workspace_id), workspace_id) is not None

    async def exec(self, workspace_id: str, command: Sequence[str], *, tty: bool,
                   stdin: bool) -> ExecStream | None:
        """`command` in the newest running container, as the agent's uid: never root."""
        current = _newest_running(await self._mine(workspace_id), workspace_id)
        if current is None:
            return None
        return await self.engine.exec_open(current.id, command, user=f"{AGENT_UID}:{AGENT_UID}",
                                           tty=tty, stdin=stdin)

    async def follow_logs(self, workspace_id: str, tail: int) -> LogFollower | None:
        mine = await self._mine(workspace_id)
        if not mine:
            return None
        newest = max(mine, key=lambda c: c.token_generation)
        return await self.engine.follow_logs(newest.id, tail)


@contextlib.asynccontextmanager
async def engine_and_store(opts: RunOptions, progress: Callable[[str], None]
                           ) -> AsyncIterator[tuple[DockerEngine, str, PlatformSettings, Store]]:
    """The engine (with network and image), the workspace network's gateway, the
    platform settings, and the migrated store, for the life of the block. The
    network is fenced off from the host but for the registry and egress ports
    (`HostFirewall`) while the block runs; the fence stays after it, and a port
    another process still serves (a replica on the same port) stays open."""
    engine, gateway, settings = await prepare_engine(opts, progress)
    firewall = HostFirewall(await engine.network_bridge(opts.network))
    ports = (opts.registry_port, opts.egress_proxy_port)
    try:
        await asyncio.to_thread(firewall.prune)
        await asyncio.to_thread(firewall.allow, *ports)
    except FirewallError as exc:
        progress(f"WARNING: {exc}")
    try:
        async with open_store(opts.data_dir, opts.database_url, progress,
                              keep_running=False, environ=opts.environ) as store:
            yield engine, gateway, settings, store
    finally:
        host = opts.registry_host or gateway
        unserved = [p for p in ports if hostnet.check_bindable(host, p) is None]
        with contextlib.suppress(FirewallError):
            await asyncio.to_thread(firewall.disallow, *unserved)
