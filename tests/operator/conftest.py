"""Session fixtures for the operator tests: Docker network, agent image, the
Kubernetes API emulator with the Workspace CRD, and the operator itself.

Everything is scoped to this pytest process (instance label `op<pid>`,
network `wsctl-op-<pid>`), so it runs beside the standalone e2e tests.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import jsonschema
import kmock
import pytest
import yaml
from docker.errors import DockerException, NotFound

from controller.adapters.docker_engine import EngineError, ensure_network, remove_networks
from controller.core.crd import draft4_schema
from controller.core.settings import default_cache_dir
from tests.operator.harness import OperatorThread, new_dir, remove_dir
from tests.operator.kube import KubeClient, KubeEmulator, KubeServer

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "workspace.yaml"
NETWORK = f"wsctl-op-{os.getpid()}"
INSTANCE = f"op{os.getpid()}"
NAMESPACE = "default"


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def crd_validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(draft4_schema(crd_schema()))


def problems(validator: jsonschema.Draft4Validator, obj: dict[str, Any]) -> list[str]:
    """Errors as '<field path>: <message>', like the API server's."""
    found = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        found.append(f"{path.lstrip('.') or '(object)'}: {error.message}")
    return found


def setup_api(emulator: KubeEmulator) -> None:
    """Discovery as a cluster with the CRD applied; server-side validation from it."""
    emulator.resources.load_bundled()  # v1 namespaces, events, secrets, ...
    crd = yaml.safe_load(CRD_FILE.read_text())["spec"]
    emulator.resources[f"{crd['group']}/{crd['versions'][0]['name']}/{crd['names']['plural']}"] \
        = kmock.ResourceInfo(
            namespaced=True, kind=crd["names"]["kind"], singular=crd["names"]["singular"],
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            shortnames=set(crd["names"]["shortNames"]), subresources={"status"})
    emulator.resources["kopf.dev/v1/clusterkopfpeerings"] = kmock.ResourceInfo(
        namespaced=False, kind="ClusterKopfPeering", singular="clusterkopfpeering",
        verbs={"get", "list", "watch", "create", "patch", "delete"})
    validator = crd_validator()
    emulator.validators["workspaces"] = lambda obj: problems(validator, obj)


def remove_managed(client: docker.DockerClient) -> None:
    for container in client.containers.list(
            all=True, filters={"label": f"wsctl.dev/instance={INSTANCE}"}):
        with contextlib.suppress(NotFound):
            container.remove(force=True)


@pytest.fixture(scope="session")
def gateway(docker_client: docker.DockerClient) -> Iterator[str]:
    yield ensure_network(docker_client.api, NETWORK, {"wsctl.dev/managed-by": "wsctl-op-tests"})
    remove_managed(docker_client)
    with contextlib.suppress(EngineError):
        remove_networks(docker_client.api, NETWORK)
    for volume in docker_client.volumes.list():
        if volume.name.startswith(f"wsctl-{INSTANCE}"):
            with contextlib.suppress(NotFound, DockerException):
                volume.remove(force=True)


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeServer]:
    server = KubeServer(setup_api).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kubectl(kube: KubeServer) -> KubeClient:
    return KubeClient(kube.url)


@pytest.fixture(scope="session")
def operator(kube: KubeServer, gateway: str, agent_image: str) -> Iterator[OperatorThread]:
    data_dir = new_dir("wsctl-op-")
    cache = Path(os.environ.get("WSCTL_CACHE_DIR") or default_cache_dir())
    proc = OperatorThread(kube_url=kube.url, data_dir=data_dir, cache_dir=cache,
                          network=NETWORK, instance=INSTANCE, gateway=gateway)
    proc.start()
    yield proc
    proc.stop()
    remove_dir(data_dir)
