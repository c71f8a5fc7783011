"""Docker engine adapter; with docker_streams, images, baseimage and chaos_docker the only
`docker` importers.

docker-py is blocking; `DockerEngine` exposes async methods that run each call
in a thread of its own pool, whose size is the controller's Docker parallelism
(`--docker-parallelism`; asyncio's default executor would cap it at cores + 4,
6 on a 2-core host). Observation costs one label-filtered list call per pass:
inspect results are cached per container id and refreshed only when the list
shows that container's state changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import re
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from docker.types import Mount as DockerMount

from controller.adapters.docker_streams import ExecStream, LogFollower, follow_logs, open_exec
from controller.core.containerspec import (
    LABEL_CONFIG_HASH,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_RESTARTED_AT,
    LABEL_TOKEN_GENERATION,
    LABEL_VOLUME,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_UID,
    MANAGED_BY,
    ContainerSpec,
    VolumeSpec,
)
from controller.core.errors import EngineUnavailableError, WsctlError
from controller.core.observed import ContainerDiagnostics, ObservedContainer
from controller.core.settings import A2A_CREDENTIAL_PATH, AGENT_UID, CONFIG_MOUNT, TOKEN_PATH

MAX_OUTAGES = 16
PROBE_THREADS = 2
DF_FRESH_SECONDS = 5.0
"""A disk-usage walk younger than this answers describe and `wsctl volumes` again."""

log = logging.getLogger("wsctl.docker")
WATCHED_EVENTS = ("die", "oom", "destroy", "stop", "start", "pause", "unpause", "kill")


class EngineUnavailable(EngineUnavailableError):
    """No Docker engine answers (at connect, or a call found it gone)."""


class EngineError(WsctlError):
    """A Docker call failed; the message names the call and the object."""


DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def engine_address() -> str:
    """Where docker-py looks for the engine: $DOCKER_HOST, else the local socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def _why_unanswered(exc: BaseException) -> str:
    text = str(exc)
    for marker, reason in (("FileNotFoundError", "no socket there"),
                           ("ConnectionRefused", "connection refused"),
                           ("PermissionError", "permission denied on the socket"),
                           ("timed out", "timed out")):
        if marker in text:
            return reason
    return type(exc).__name__


def connect(timeout: int = 60) -> docker.DockerClient:
    """A client for the engine at $DOCKER_HOST or the local socket, checked with a ping."""
    try:
        client = docker.from_env(timeout=timeout, max_pool_size=32)
        client.ping()
    except DockerException as exc:
        raise EngineUnavailable(
            f"no Docker engine answers at {engine_address()} ({_why_unanswered(exc)}); "
            "start one with scripts/bootstrap docker (make docker) or set DOCKER_HOST"
        ) from None
    return client


ICC_OPTION = "com.docker.network.bridge.enable_icc"
BRIDGE_OPTION = "com.docker.network.bridge.name"


def _not_isolated(net: dict[str, Any]) -> str | None:
    """Why a network is no workspace boundary (None: it is one)."""
    if not net.get("Internal"):
        return "it is not internal: its containers have a route off this host"
    if (net.get("Options") or {}).get(ICC_OPTION) != "false":
        return "inter-container traffic is enabled: workspaces reach each other"
    return None


def _create_network(api: Any, name: str, **options: Any) -> dict[str, Any]:
    """Create a bridge network (one created meanwhile by another process will do) and
    return it as inspected."""
    try:
        api.create_network(name, driver="bridge", **options)
    except APIError as exc:  # created concurrently by another process
        if exc.status_code != 409:
            raise
    found: dict[str, Any] = api.inspect_network(name)
    return found


def ensure_network(api: Any, name: str, labels: Mapping[str, str] | None = None) -> str:
    """Create the workspace network if missing (blocking); return its gateway address.

    The network is the first half of the workspace boundary: `internal` (no route
    off this host: no internet, no LAN, no cloud metadata address; external names do
    not resolve) with inter-container traffic disabled (no workspace reaches
    another). The host is still reachable through the bridge; `HostFirewall` closes
    that but for the registry port. An existing network that is not such is refused,
    naming the fix: wsctl never runs workspaces on an open network by accident. One
    an older wsctl made (its label) with no container running on it is made again,
    isolated: nothing is lost (a stopped workspace container is recreated anyway).
    """
    wanted = dict(labels or {LABEL_MANAGED_BY: MANAGED_BY})

    def create() -> dict[str, Any]:
        return _create_network(api, name, internal=True, options={ICC_OPTION: "false"},
                               labels=wanted)

    try:
        net = api.inspect_network(name)
    except NotFound:
        net = create()
    ours = (net.get("Labels") or {}).get(LABEL_MANAGED_BY) == wanted.get(LABEL_MANAGED_BY)
    if _not_isolated(net) is not None and ours and not net.get("Containers"):
        try:
            api.remove_network(net["Id"])
        except APIError as exc:  # a container joined meanwhile: refused below
            log.warning("network %s not replaced: %s", name, exc.explanation)
        else:
            log.warning("network %s was not isolated (an older wsctl made it): made "
                        "again, internal, with inter-container traffic off", name)
            net = create()
    problem = _not_isolated(net)
    if problem is not None:
        raise EngineError(
            f"network {name} cannot hold workspaces: {problem} (made by hand or by an "
            f"older wsctl). Fix: stop wsctl, remove the containers on it (docker ps -a "
            f"--filter network={name}) and `docker network rm {name}`; wsctl makes it "
            f"again, isolated, and recreates the workspaces (their files stay), or "
            f"pass --network with a new name")
    configs = (net.get("IPAM") or {}).get("Config") or []
    for config in configs:
        if config.get("Gateway"):
            return str(config["Gateway"])
    raise EngineError(f"network {name} has no IPv4 gateway")


def ensure_open_network(api: Any, name: str) -> None:
    """The ordinary bridge network an `open` workspace joins beside the isolated one
    (a route to what the host reaches; Docker's isolation between networks holds)."""
    try:
        net = api.inspect_network(name)
    except NotFound:
        net = _create_network(api, name, labels={LABEL_MANAGED_BY: MANAGED_BY})
    if net.get("Internal"):
        raise EngineError(f"network {name} is internal: `open` workspaces would have no "
                          f"route; remove it (docker network rm {name}) and wsctl makes it")


def remove_networks(api: Any, name: str) -> None:
    """Remove the workspace network and the `open` one wsctl made beside it (each if
    present; a network still in use stays, and is said to stay by Docker's error)."""
    for made in (name, f"{name}-open"):
        try:
            api.remove_network(made)
        except NotFound:
            pass
        except APIError as exc:
            raise EngineError(f"remove network {made}: {exc.explanation}") from None


def network_bridge(api: Any, name: str) -> str:
    """The host interface of a bridge network (Docker's `br-<id>` unless named)."""
    net = api.inspect_network(name)
    named = (net.get("Options") or {}).get(BRIDGE_OPTION)
    return str(named) if named else f"br-{str(net['Id'])[:12]}"


@dataclass(frozen=True)
class EngineFacts:
    """What `wsctl doctor` reports of the engine and its resource-limit support."""

    version: str
    api_version: str
    cgroup_version: str
    cgroup_driver: str
    memory_limit: bool
    cpu_quota: bool
    pids_limit: bool
    warnings: tuple[str, ...]


def engine_facts(client: docker.DockerClient) -> EngineFacts:
    version = client.version()
    info = client.info()
    return EngineFacts(
        version=str(version.get("Version", "?")), api_version=str(version.get("ApiVersion", "?")),
        cgroup_version=str(info.get("CgroupVersion") or "?"),
        cgroup_driver=str(info.get("CgroupDriver") or "?"),
        memory_limit=bool(info.get("MemoryLimit")), cpu_quota=bool(info.get("CpuCfsQuota")),
        pids_limit=bool(info.get("PidsLimit")),
        warnings=tuple(str(w) for w in info.get("Warnings") or ()))


PROBE_LABEL = "wsctl.dev/doctor"
_CONNECT_BACK = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection(('host.docker.internal', int(sys.argv[1])), 5).close()\n"
    "except OSError as exc:\n"
    "    print(exc)\n"
    "    sys.exit(3)\n"
)


def probe_connect_back(client: docker.DockerClient, *, image: str, network: str, gateway: str,
                       port: int, timeout: float = 30.0) -> tuple[bool, str]:
    """Start a throwaway container on `network`, wired like a workspace
    (host.docker.internal -> `gateway`, the agent's uid), that opens a TCP
    connection to host.docker.internal:`port`. Returns (connected, detail); never
    leaves the container behind."""
    container = None
    try:
        container = client.containers.run(
            image, entrypoint=["python3", "-c", _CONNECT_BACK, str(port)], command=[],
            network=network, extra_hosts={"host.docker.internal": gateway},
            user=str(AGENT_UID), labels={PROBE_LABEL: "connect-back"}, detach=True)
        try:
            result = container.wait(timeout=timeout)
        except Exception:  # requests' ReadTimeout: the container hangs
            return False, f"the probe container did not finish within {timeout:.0f}s"
        code = int(result.get("StatusCode", -1))
        if code == 0:
            return True, "connected"
        said = " ".join(container.logs(tail=5).decode(errors="replace").split())
        return False, said or f"the probe exited with {code}"
    except DockerException as exc:
        return False, f"cannot run the probe container: {_one_line(exc)}"
    finally:
        if container is not None:
            with contextlib.suppress(DockerException):
                container.remove(force=True, v=True)  # and the image's anonymous volumes


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "explanation", None) or exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 times (nanoseconds, 'Z'); the zero time means never."""
    if not value or value.startswith("0001-"):
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value)
    if not match:
        return None
    fraction = (match[2] or ".0")[:7]
    zone = "+00:00" if match[3] == "Z" else match[3]
    return datetime.fromisoformat(match[1] + fraction + zone)


@dataclass(frozen=True)
class EngineCall:
    """One Docker API call, counted for metrics and benchmarks."""

    name: str
    seconds: float


class DockerEngine:
    def __init__(self, client: docker.DockerClient, instance: str = "default",
                 on_call: Callable[[EngineCall], None] | None = None,
                 max_concurrent_calls: int = 8) -> None:
        self.client = client
        self.instance = instance
        # Only this controller instance's containers: a second instance (tests, a
        # user's other controller) is never adopted or removed as an orphan.
        self.label_filter = [f"{LABEL_MANAGED_BY}={MANAGED_BY}", f"{LABEL_INSTANCE}={instance}"]
        self.api = client.api
        self.network: str | None = None
        """The workspace network (set by `ensure_network`): a container's address there
        is the one the controller dials and the egress proxy knows it by."""
        self._inspect_cache: dict[str, tuple[str, dict[str, Any]]] = {}
        self._df_cache: tuple[float, list[dict[str, Any]]] | None = None
        self._df_flight: asyncio.Future[list[dict[str, Any]]] | None = None
        self._df_epoch = 0
        self._on_call = on_call
        self.calls = 0
        self.calls_by_name: dict[str, int] = {}
        # Blocking calls in flight at once. Keep it within the client's connection
        # pool (max_pool_size) or connections are opened and discarded per call.
        self._threads = ThreadPoolExecutor(max_concurrent_calls, thread_name_prefix="docker")
        self._outages: deque[tuple[datetime, datetime]] = deque(maxlen=MAX_OUTAGES)
        self.reconnect_seconds = 1.0
        # Exec probes run on threads of their own: a probe command that hangs holds its
        # thread until it ends, never one the reconciles need.
        self._probe_threads = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="probe")

    def outages(self) -> tuple[tuple[datetime, datetime], ...]:
        """The last MAX_OUTAGES spans in which the engine did not answer (lost, back)."""
        return tuple(self._outages)

    async def _run(self, name: str, func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        start = time.monotonic()
        self.calls += 1
        self.calls_by_name[name] = self.calls_by_name.get(name, 0) + 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._threads, functools.partial(func, *args, **kw))
        except requests.exceptions.ConnectionError as exc:  # the engine went away
            raise EngineUnavailable(
                f"the Docker engine does not answer at {engine_address()} ({name}: "
                f"{_why_unanswered(exc)}); retry later") from exc
        finally:
            if self._on_call is not None:
                self._on_call(EngineCall(name, time.monotonic() - start))

    # ------------------------------------------------------------ network

    async def ensure_network(self, name: str) -> str:
        """Create the workspace network if missing; return its gateway address."""
        result: str = await self._run("network", ensure_network, self.api, name)
        self.network = name
        return result

    async def ensure_open_network(self, name: str) -> None:
        await self._run("network", ensure_open_network, self.api, name)

    async def network_bridge(self, name: str) -> str:
        result: str = await self._run("network", network_bridge, self.api, name)
        return result

    # ------------------------------------------------------------ observe

    async def list_containers(self, workspace_id: str | None = None) -> list[ObservedContainer]:
        """Managed containers (all, or one workspace's), from one list call plus
        inspects of containers whose state changed since last seen."""
        labels = self.label_filter
        if workspace_id is not None:
            # One workspace's containers: a reconcile must not parse the whole fleet.
            labels = [*labels, f"{LABEL_WORKSPACE}={workspace_id}"]
        summaries: list[dict[str, Any]] = await self._run(
            "list", self.api.containers, all=True, filters={"label": labels})
        if workspace_id is None:
            live_ids = {s["Id"] for s in summaries}
            for stale in set(self._inspect_cache) - live_ids:
                del self._inspect_cache[stale]
        observed: list[ObservedContainer] = []
        for summary in summaries:
            cached = self._inspect_cache.get(summary["Id"])
            # State only: Status text ("Up 5 seconds") changes every call. Restarts
            # and other changes within a state reach us as events, which forget().
            # Ports and addresses too: a network reconnect (no container event)
            # publishes the agent port on a new host port.
            networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
            marker = (f'{summary.get("State")}|{summary.get("Ports")}|'
                      f'{sorted(str(n.get("IPAddress")) for n in networks.values())}')
            if cached is None or cached[0] != marker:
                try:
                    info = await self._run("inspect", self.api.inspect_container, summary["Id"])
                except NotFound:
                    continue
                self._inspect_cache[summary["Id"]] = (marker, info)
                cached = self._inspect_cache[summary["Id"]]
            observed.append(self._observe(cached[1]))
        return observed

    def forget(self, container_id: str) -> None:
        """Drop the cached inspect of a container (on its Docker events)."""
        self._inspect_cache.pop(container_id, None)

    def _observe(self, info: dict[str, Any]) -> ObservedContainer:
        labels = info["Config"].get("Labels") or {}
        state = info.get("State") or {}
        ports = ((info.get("NetworkSettings") or {}).get("Ports") or {}).get("8000/tcp") or []
        host_port = int(ports[0]["HostPort"]) if ports and ports[0].get("HostPort") else None
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        ip = (networks.get(self.network) or {}).get("IPAddress") if self.network else None
        ip = ip or next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")),
                        None)
        try:
            generation = int(labels.get(LABEL_TOKEN_GENERATION, "0"))
        except ValueError:
            generation = 0
        return ObservedContainer(
            id=info["Id"],
            name=info["Name"].lstrip("/"),
            workspace_id=labels.get(LABEL_WORKSPACE, ""),
            state=str(state.get("Status", "unknown")),
            config_hash=labels.get(LABEL_CONFIG_HASH),
            token_generation=generation,
            restarted_at=labels.get(LABEL_RESTARTED_AT, ""),
            created_at=_time(info.get("Created")),
            started_at=_time(state.get("StartedAt")),
            finished_at=_time(state.get("FinishedAt")),
            exit_code=state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            host_port=host_port,
            ip_address=ip,
        )

    # ------------------------------------------------------------ act

    async def create(self, spec: ContainerSpec, host_gateway: str) -> str:
        """Create (not start) the container; an existing one of that name is reused."""
        def create() -> str:
            # No published port: an internal network has none; the controller dials
            # the container's address on the network (the agent answers only it).
            host_config = self.api.create_host_config(
                mounts=[DockerMount(target=m.target, source=m.source, type=m.type,
                                    read_only=m.read_only, no_copy=m.no_copy)
                        for m in spec.mounts],
                mem_limit=spec.memory_bytes,
                nano_cpus=spec.nano_cpus,
                pids_limit=spec.pids_limit,
                read_only=spec.read_only_rootfs,
                tmpfs=dict(spec.tmpfs),
                cap_drop=list(spec.cap_drop),
                security_opt=list(spec.security_opt),
                extra_hosts={host: (host_gateway if ip == "host-gateway" else ip)
                             for host, ip in spec.extra_hosts.items()},
                network_mode=spec.network,
                dns_opt=list(spec.dns_options) or None,
                restart_policy={"Name": "no"},
            )
            def make() -> str:
                created = self.api.create_container(
                    image=spec.image, name=spec.name, user=spec.user,
                    environment={k: v.value for k, v in spec.env.items()},
                    labels=dict(spec.labels), ports=[spec.agent_port],
                    host_config=host_config, hostname=spec.name[:63],
                    entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
                    command=list(spec.command) if spec.command is not None else None,
                    working_dir=spec.working_dir,
                )
                return str(created["Id"])
            try:
                container_id = make()
            except APIError as exc:
                if exc.status_code != 409:
                    raise EngineError(f"create {spec.name}: {exc.explanation}") from None
                if spec.llm is None:  # a retried create: the container is the one wanted
                    container_id = str(self.api.inspect_container(spec.name)["Id"])
                else:
                    # Gateway mode: the one found holds the LLM credential of an attempt
                    # that no longer counts (the store has this attempt's): replace it.
                    self.api.remove_container(spec.name, force=True, v=True)
                    container_id = make()
            for network in spec.extra_networks:  # before start: no moment without it
                try:
                    self.api.connect_container_to_network(container_id, network)
                except APIError as exc:
                    if "already" not in str(exc.explanation):
                        raise EngineError(f"create {spec.name}: joining {network}: "
                                          f"{exc.explanation}") from None
            return container_id
        result: str = await self._run("create", create)
        return result

    async def put_token(self, container: str, token: str, *,
                        a2a_credential: str | None = None) -> None:
        """Write the token file (and, before start, the A2A credential file) into the
        config volume of a container, 0600 and owned by the agent's uid.

        Uses the archive API, so it works when the controller does not share a
        filesystem with the Docker host.
        """
        files = {TOKEN_PATH: token}
        if a2a_credential is not None:
            files[A2A_CREDENTIAL_PATH] = a2a_credential
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path, value in files.items():
                data = value.encode()
                info = tarfile.TarInfo(path.rsplit("/", 1)[1])
                info.size = len(data)
                info.mode = 0o600
                info.uid = info.gid = AGENT_UID
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))
        def put() -> None:
            if not self.api.put_archive(container, CONFIG_MOUNT, buffer.getvalue()):
                raise EngineError(f"writing the token into {container} failed")
        await self._run("put_archive", put)

    async def start(self, container: str) -> None:
        await self._run("start", self.api.start, container)

    async def stop(self, container: str, grace_seconds: int) -> None:
        try:
            await self._run("stop", self.api.stop, container, timeout=grace_seconds)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code not in (304, 409):
                raise

    async def remove(self, container: str) -> None:
        try:
            # v=True: an anonymous volume the image declares goes with its container
            # (named volumes, the workspace's storage among them, are never removed so).
            await self._run("remove", self.api.remove_container, container, force=True, v=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409 or "already in progress" not in str(exc.explanation):
                raise
        self.forget(container)

    async def ensure_volume(self, volume: VolumeSpec) -> dict[str, str] | None:
        """Create the volume unless it exists: None if created now, else the labels of
        the one found (a retained volume says which workspace uid created it)."""
        def ensure() -> dict[str, str] | None:
            try:
                found = self.api.inspect_volume(volume.name)
                return dict(found.get("Labels") or {})
            except NotFound:
                pass
            self.api.create_volume(volume.name, driver="local", labels=dict(volume.labels))
            if volume.owner_image is not None:
                self._chown_volume(volume)
            return None
        result: dict[str, str] | None = await self._run("ensure_volume", ensure)
        if result is None:
            self._forget_storage()  # a new volume: the last walk does not list it
        return result

    def _chown_volume(self, volume: VolumeSpec) -> None:
        """Give a new volume's root to the agent's uid: a one-off root container
        with no network, every capability dropped but CHOWN, read-only root."""
        host_config = self.api.create_host_config(
            mounts=[DockerMount(target=volume.mount_path, source=volume.name, type="volume",
                                no_copy=True)],
            network_mode="none", cap_drop=["ALL"], cap_add=["CHOWN"], read_only=True,
            security_opt=["no-new-privileges:true"], mem_limit=64 * 2**20, pids_limit=16)
        created = self.api.create_container(
            image=volume.owner_image, user="0:0", host_config=host_config,
            command=["chown", f"{AGENT_UID}:{AGENT_UID}", volume.mount_path],
            # Not labelled managed-by: the reconciler must not take it for a workspace's.
            labels={LABEL_VOLUME: "init:" + volume.name}, network_disabled=True)
        try:
            self.api.start(created["Id"])
            exit_code = self.api.wait(created["Id"], timeout=60).get("StatusCode")
            if exit_code != 0:
                tail = self.api.logs(created["Id"], tail=5).decode(errors="replace").strip()
                raise EngineError(f"chown of volume {volume.name} to uid {AGENT_UID} "
                                  f"failed (exit {exit_code}): {tail}")
        finally:
            with contextlib.suppress(DockerException):  # v: the image's anonymous /configs
                self.api.remove_container(created["Id"], force=True, v=True)

    async def storage_volumes(self) -> list[dict[str, Any]]:
        """This instance's workspace storage volumes with their size on disk (Docker's
        disk-usage walk: it reads every volume, so it is for describe and `wsctl
        volumes`, never for a reconcile). Callers at the same time share one walk and
        a walk younger than DF_FRESH_SECONDS is reused: Docker runs one at a time and
        refuses a second with a 500. Refused anyway (another client's walk), the
        volumes are listed without sizes rather than failing the request."""
        cached = self._df_cache
        if cached is not None and time.monotonic() - cached[0] < DF_FRESH_SECONDS:
            return [dict(v) for v in cached[1]]
        flight = self._df_flight
        if flight is None or flight.done():
            flight = self._df_flight = asyncio.ensure_future(self._walk_storage())
        found = await asyncio.shield(flight)
        return [dict(v) for v in found]

    def _forget_storage(self) -> None:
        """Volumes changed: no walk from before may be reused (one in flight is not)."""
        self._df_cache, self._df_flight = None, None
        self._df_epoch += 1

    async def _walk_storage(self) -> list[dict[str, Any]]:
        epoch = self._df_epoch
        try:
            found: list[dict[str, Any]] = await self._run("df", self._storage_usage)
        except APIError as exc:
            log.info("disk usage unavailable (%s); listing volumes without sizes",
                     exc.explanation or exc)
            listed: list[dict[str, Any]] = await self._run("volumes", self._storage_list)
            return listed
        if epoch == self._df_epoch:
            self._df_cache = (time.monotonic(), found)
        return found

    def _storage_row(self, v: Mapping[str, Any]) -> dict[str, Any] | None:
        labels = v.get("Labels") or {}
        if labels.get(LABEL_MANAGED_BY) != MANAGED_BY \
                or labels.get(LABEL_INSTANCE) != self.instance \
                or labels.get(LABEL_VOLUME) != "workspace":
            return None
        data = v.get("UsageData") or {}
        size = data.get("Size")
        return {"name": v.get("Name"), "workspace": labels.get(LABEL_WORKSPACE, ""),
                "workspaceUID": labels.get(LABEL_WORKSPACE_UID) or None,
                "createdAt": v.get("CreatedAt"),
                "sizeBytes": size if isinstance(size, int) and size >= 0 else None,
                "containers": data.get("RefCount")}

    def _storage_rows(self, volumes: Sequence[Mapping[str, Any]] | None
                      ) -> list[dict[str, Any]]:
        rows = (self._storage_row(v) for v in volumes or [])
        return sorted((r for r in rows if r is not None), key=lambda r: str(r["name"]))

    def _storage_usage(self) -> list[dict[str, Any]]:
        return self._storage_rows(self.api.df().get("Volumes"))

    def _storage_list(self) -> list[dict[str, Any]]:
        listed = self.api.volumes(filters={"label": [*self.label_filter,
                                                      f"{LABEL_VOLUME}=workspace"]})
        return self._storage_rows((listed or {}).get("Volumes"))

    async def remove_volume(self, name: str) -> None:
        self._forget_storage()  # the last walk would still list it
        with contextlib.suppress(NotFound):
            await self._run("remove_volume", self.api.remove_volume, name, force=True)

    async def diagnostics(self, container_id: str, tail: int = 50) -> ContainerDiagnostics | None:
        """State, exit code, OOM, last log lines, env names as set/unset: never env values."""
        def capture() -> ContainerDiagnostics | None:
            try:
                info = self.api.inspect_container(container_id)
            except NotFound:
                return None
            try:
                logs = self.api.logs(container_id, tail=tail, stdout=True, stderr=True)
            except NotFound:
                return None
            except APIError as exc:  # 409: marked for removal (a `docker rm -f` under us)
                if exc.status_code != 409:
                    raise
                logs = f"(no logs: {exc.explanation})".encode()
            state = info.get("State") or {}
            env_names: dict[str, str] = {}
            for item in info["Config"].get("Env") or []:
                name, _, value = item.partition("=")
                env_names[name] = "set" if value else "unset"
            keep = ("Status", "Running", "Paused", "Restarting", "OOMKilled", "Dead", "Pid",
                    "ExitCode", "Error", "StartedAt", "FinishedAt")
            return ContainerDiagnostics(
                container_id=info["Id"],
                state={k: state.get(k) for k in keep},
                exit_code=state.get("ExitCode"),
                oom_killed=bool(state.get("OOMKilled")),
                log_tail=logs.decode("utf-8", "replace") if isinstance(logs, bytes) else "",
                env_names=env_names,
            )
        result: ContainerDiagnostics | None = await self._run("diagnostics", capture)
        return result

    async def logs(self, container: str, tail: int = 200) -> str | None:
        """The container's last `tail` log lines; None when it is gone (removed between
        the list and this call, or being removed: Docker answers 404 or 409)."""
        try:
            data = await self._run("logs", self.api.logs, container, tail=tail)
        except NotFound:
            return None
        except APIError as exc:
            if exc.status_code == 409:
                return None
            raise
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)

    # ------------------------------------------------------------ streams

    async def exec_open(self, container: str, command: Sequence[str], *, user: str,
                        tty: bool, stdin: bool) -> ExecStream | None:
        """Run `command` in the running `container` as `user`, attached (see
        docker_streams); None when the container is gone or not running."""
        return await open_exec(self._run, self.api, container, command, user=user, tty=tty,
                               stdin=stdin)

    async def run_probe(self, container: str, command: Sequence[str],
                        seconds: float) -> tuple[int | None, str]:
        """An exec probe: `command` (no shell) in the running `container` as the agent's
        user, to its end. (exit code, the output's last line); (None, why) when it could
        not run. Raises TimeoutError after `seconds` (the command runs on)."""
        def run() -> tuple[int | None, str]:
            try:
                created = self.api.exec_create(container, list(command),
                                               user=f"{AGENT_UID}:{AGENT_UID}")
                output = self.api.exec_start(created["Id"])
                code = self.api.exec_inspect(created["Id"]).get("ExitCode")
            except NotFound:
                return None, "the container is gone"
            except APIError as exc:
                return None, _one_line(exc)
            except requests.exceptions.ConnectionError:
                return None, "the Docker engine does not answer"
            lines = (output.decode("utf-8", "replace") if isinstance(output, bytes)
                     else str(output)).strip().splitlines()
            return (int(code) if code is not None else None), (lines[-1][:200] if lines else "")
        self.calls_by_name["exec_probe"] = self.calls_by_name.get("exec_probe", 0) + 1
        future = asyncio.get_running_loop().run_in_executor(self._probe_threads, run)
        return await asyncio.wait_for(future, seconds)

    async def follow_logs(self, container: str, tail: int) -> LogFollower | None:
        """The container's logs as they are written; None when it is gone."""
        return await follow_logs(self._run, self.api, container, tail)

    async def image_exists(self, image: str) -> bool:
        try:
            await self._run("inspect_image", self.api.inspect_image, image)
        except NotFound:
            return False
        return True

    # ------------------------------------------------------------ events

    def watch_events(self, loop: asyncio.AbstractEventLoop,
                     deliver: Callable[[str, str, str], None],
                     stop: threading.Event,
                     on_reconnect: Callable[[], None] | None = None) -> threading.Thread:
        """Stream container events of managed containers into `deliver(workspace, action, id)`.

        Runs in a daemon thread; reconnects after errors until `stop` is set. A span
        in which the engine did not answer (its stream broke and a reconnect failed:
        dockerd stopped or restarted) is recorded in `outages()`; after any broken
        stream, `on_reconnect` runs on `loop` once the stream is back, since events
        of that gap (every container dying with the engine) were never delivered.
        """
        def pump() -> None:
            lost_at: datetime | None = None
            unanswered = False
            while not stop.is_set():
                try:
                    stream = self.api.events(decode=True, filters={
                        "type": "container", "label": self.label_filter,
                        "event": list(WATCHED_EVENTS)})
                    if lost_at is not None:
                        if unanswered:
                            self._outages.append((lost_at, datetime.now(UTC)))
                        lost_at, unanswered = None, False
                        if on_reconnect is not None:
                            loop.call_soon_threadsafe(on_reconnect)
                    for event in stream:
                        if stop.is_set():
                            stream.close()
                            return
                        attrs = (event.get("Actor") or {}).get("Attributes") or {}
                        workspace = attrs.get(LABEL_WORKSPACE)
                        if workspace:
                            loop.call_soon_threadsafe(deliver, workspace,
                                                      str(event.get("Action", "")),
                                                      str(event.get("id", "")))
                    lost_at = lost_at or datetime.now(UTC)  # the engine closed the stream
                except Exception as exc:
                    lost_at = lost_at or datetime.now(UTC)
                    unanswered = unanswered or isinstance(exc, requests.exceptions.ConnectionError)
                    if stop.wait(self.reconnect_seconds):
                        return
        thread = threading.Thread(target=pump, name="docker-events", daemon=True)
        thread.start()
        return thread
