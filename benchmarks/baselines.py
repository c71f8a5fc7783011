"""The alternatives wsctl is measured against, doing the same work for the same image and env:
raw docker-py calls, and Debian's docker-compose `up -d`.

Their containers are built from the controller's own ContainerSpec of the same workspace
(`benchmarks.bench.specs_for`), and so are the controller's: the same settings, the
same networks (the isolated workspace network; `<network>-open` as well, joined before
the start, when the spec is `egress: open`, as wsctl does), no port published (wsctl
publishes none: its controller dials the container's address on the workspace
network, and so does this script). A hand-written script could put them on one
ordinary network instead; it would then be measured doing less than wsctl (one
network endpoint instead of two for an open workspace), and the ratios would show the
isolation's cost, not the controller's. What the boundary itself costs is not measured
here."""

from __future__ import annotations

import http.client
import io
import json
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import yaml
from docker.types import Mount

from controller.core.containerspec import ContainerSpec
from controller.core.settings import AGENT_PORT

RAW_A2A = "bench-raw-a2a-" + secrets.token_urlsafe(24)
"""The A2A credential the hand-written script gives its agents (the agent answers only
its holder, as the controller's agents answer only the controller)."""


def _token_tar(token: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, value in ((".auth_token", token), (".a2a_credential", RAW_A2A)):
            data = value.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), 0o600, 10001, 10001
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def create_start(client: docker.DockerClient, spec: ContainerSpec, gateway: str,
                 label: dict[str, str]) -> str:
    """What a hand-written script does: create with the same settings (on the same
    networks, the extra ones joined before the start, as the controller does), write the
    token, start."""
    api = client.api
    host_config = api.create_host_config(
        mounts=[Mount(target=m.target, source=m.source, type=m.type) for m in spec.mounts],
        mem_limit=spec.memory_bytes, nano_cpus=spec.nano_cpus, pids_limit=spec.pids_limit,
        read_only=spec.read_only_rootfs, tmpfs=dict(spec.tmpfs), cap_drop=list(spec.cap_drop),
        security_opt=list(spec.security_opt), extra_hosts={"host.docker.internal": gateway},
        network_mode=spec.network)
    cid = str(api.create_container(
        image=spec.image, name=spec.name, user=spec.user,
        environment={k: v.value for k, v in spec.env.items()},
        labels={**spec.labels, **label}, ports=[spec.agent_port],
        host_config=host_config)["Id"])
    for network in spec.extra_networks:
        api.connect_container_to_network(cid, network)
    api.put_archive(cid, "/configs", _token_tar(secrets.token_urlsafe(32)))
    api.start(cid)
    return cid


def agent_address(client: docker.DockerClient, cid: str, network: str) -> str | None:
    """The container's address on `network` (the workspace network: where the controller
    dials its agents too); None while it has none (not started)."""
    networks = client.api.inspect_container(cid)["NetworkSettings"]["Networks"] or {}
    address = (networks.get(network) or {}).get("IPAddress")
    return str(address) if address else None


def agent_answers(client: docker.DockerClient, cid: str, network: str,
                  port: int = AGENT_PORT) -> bool:
    address = agent_address(client, cid, network)
    if address is None:
        return False
    request = urllib.request.Request(f"http://{address}:{port}/healthz",
                                     headers={"Authorization": f"Bearer {RAW_A2A}"})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def send_message(address: str, port: int, payload: dict[str, Any], timeout: float = 30.0
                 ) -> dict[str, Any] | None:
    """One A2A `message/send` straight to the agent's address on the workspace network,
    as the controller's proxy sends it (POST /, JSON-RPC); None while nothing answers."""
    request = urllib.request.Request(
        f"http://{address}:{port}/", data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {RAW_A2A}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            answer = json.loads(response.read())
    except (OSError, http.client.HTTPException, ValueError):
        # Refused, or reset, while the agent is not listening yet.
        return None
    return answer if isinstance(answer, dict) else None


def answer_after_start(client: docker.DockerClient, cid: str, spec: ContainerSpec,
                       payload: dict[str, Any], timeout: float = 60.0,
                       interval: float = 0.01) -> dict[str, Any]:
    """Poll the just-started container with `payload` until its agent answers it
    (every `interval` s): the floor's end point. An answer that is a JSON-RPC error
    is raised, not counted (the controller's side must answer with a result too)."""
    deadline = time.monotonic() + timeout
    address = None
    while time.monotonic() < deadline:
        address = address or agent_address(client, cid, spec.network)
        answer = None if address is None else send_message(address, spec.agent_port, payload)
        if answer is not None:
            if "result" not in answer:
                raise RuntimeError(f"the raw agent answered an error: {answer}")
            return answer
        time.sleep(interval)
    raise TimeoutError(f"the raw agent did not answer within {timeout:.0f}s of its start")


def recreate(client: docker.DockerClient, old_id: str, spec: ContainerSpec, gateway: str,
             label: dict[str, str]) -> str:
    client.api.stop(old_id, timeout=5)
    client.api.remove_container(old_id, force=True)
    return create_start(client, spec, gateway, label)


def bring_up(client: docker.DockerClient, specs: list[ContainerSpec], gateway: str,
             label: dict[str, str], parallelism: int) -> float:
    """Create, write the token and start every container, `parallelism` at a time, in
    this process; seconds until the last start() call returned. The benchmark's end
    point is Docker's start event of the last container, timed by its caller."""
    started = time.monotonic()
    with ThreadPoolExecutor(parallelism) as pool:
        list(pool.map(lambda s: create_start(client, s, gateway, label), specs))
    return time.monotonic() - started


def ensure_compose() -> str:
    """docker-compose, the baseline: installed by `scripts/bootstrap compose` (make bench
    and make bench-quick run it), never from here."""
    found = shutil.which("docker-compose")
    if not found:
        raise RuntimeError("docker-compose is missing: run scripts/bootstrap compose "
                           "(make bench does)")
    return found


def compose_file(specs: list[ContainerSpec], gateway: str) -> Path:
    """A folder with the docker-compose.yml of these services (the file a user has): the
    same settings and networks as the specs' (external: the benchmark made them), no
    port published."""
    folder = Path(tempfile.mkdtemp(prefix="wsctl-bench-compose-"))
    services = {}
    networks: dict[str, str] = {}
    for spec in specs:
        joined = [spec.network, *spec.extra_networks]
        for network in joined:
            networks.setdefault(network, f"net{len(networks)}")
        services[spec.name.replace(".", "-")] = {
            "image": spec.image, "user": spec.user,
            "environment": {k: v.value for k, v in spec.env.items()},
            "mem_limit": spec.memory_bytes, "cpus": spec.nano_cpus / 1e9,
            "pids_limit": spec.pids_limit, "read_only": True, "tmpfs": list(spec.tmpfs),
            "cap_drop": list(spec.cap_drop), "security_opt": list(spec.security_opt),
            "extra_hosts": [f"host.docker.internal:{gateway}"],
            "networks": [networks[network] for network in joined],
            "volumes": [f"{spec.name.replace('.', '-')}-configs:/configs"],
        }
    document = {
        "version": "2.4", "services": services,
        "volumes": {f"{s.name.replace('.', '-')}-configs": {} for s in specs},
        "networks": {key: {"external": {"name": network}}
                     for network, key in networks.items()},
    }
    (folder / "docker-compose.yml").write_text(yaml.safe_dump(document))
    return folder


def compose_up(folder: Path, project: str, client: docker.DockerClient,
               timeout: float = 300.0) -> tuple[float | None, int]:
    """`docker-compose up -d` of the file in `folder` (`compose_file`).

    Returns (seconds until the process exited, or None if it did not finish
    within `timeout`; containers running at the end). Debian's docker-compose
    1.29.2 has been seen to hang here part-way through large projects. The
    benchmark's end point is Docker's start event of the last container, timed
    by the caller.

    Compose runs at its default parallelism: Debian's docker-compose 1.29.2
    deadlocks with COMPOSE_PARALLEL_LIMIT=8 at 50 services (seen here: stuck
    after 3 containers for minutes), so it cannot be held to wsctl's 8.
    """
    binary = ensure_compose()
    started = time.monotonic()
    seconds: float | None
    try:
        subprocess.run([binary, "-p", project, "up", "-d", "--quiet-pull"], cwd=folder,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=timeout)
        seconds = time.monotonic() - started
    except subprocess.TimeoutExpired:
        seconds = None
    running = len(client.containers.list(
        filters={"label": f"com.docker.compose.project={project}"}))
    return seconds, running


def compose_down(folder: Path, project: str) -> None:
    subprocess.run([ensure_compose(), "-p", project, "down", "-v", "-t", "1"], cwd=folder,
                   check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(folder, ignore_errors=True)
