"""The workspace network as wsctl makes and checks it, on the real engine: internal
with inter-container traffic off; a plain network an older wsctl made with nothing
running on it is made again isolated; anyone else's, or one in use, is refused with
the fix."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import docker
import pytest
from docker.errors import DockerException

from controller.adapters.docker_engine import EngineError, ensure_network, remove_networks

pytestmark = pytest.mark.docker

LABELS = {"wsctl.dev/managed-by": "wsctl-net-test"}


@pytest.fixture
def name(docker_client: docker.DockerClient) -> Iterator[str]:
    made = f"wsctl-net-test-{os.getpid()}"
    yield made
    with contextlib.suppress(EngineError, DockerException):
        remove_networks(docker_client.api, made)


def isolated(client: docker.DockerClient, name: str) -> tuple[bool, str | None]:
    net = client.api.inspect_network(name)
    return bool(net["Internal"]), net["Options"].get("com.docker.network.bridge.enable_icc")


def test_made_internal_without_inter_container_traffic(
        docker_client: docker.DockerClient, name: str) -> None:
    gateway = ensure_network(docker_client.api, name, LABELS)
    assert gateway.count(".") == 3
    assert isolated(docker_client, name) == (True, "false")
    assert ensure_network(docker_client.api, name, LABELS) == gateway  # idempotent


def test_an_older_wsctl_network_with_nothing_running_is_made_again(
        docker_client: docker.DockerClient, name: str) -> None:
    docker_client.networks.create(name, driver="bridge", labels=LABELS)
    assert isolated(docker_client, name) == (False, None)
    ensure_network(docker_client.api, name, LABELS)
    assert isolated(docker_client, name) == (True, "false")


def test_someone_elses_network_is_refused_and_left_alone(
        docker_client: docker.DockerClient, name: str) -> None:
    docker_client.networks.create(name, driver="bridge", labels={"owner": "someone"})
    with pytest.raises(EngineError, match=rf"network {name} cannot hold workspaces: it is "
                                          r"not internal.*docker network rm"):
        ensure_network(docker_client.api, name, LABELS)
    assert isolated(docker_client, name) == (False, None)


def test_one_in_use_is_refused(docker_client: docker.DockerClient, name: str,
                               agent_image: str) -> None:
    docker_client.networks.create(name, driver="bridge", labels=LABELS)
    container = docker_client.containers.run(agent_image, entrypoint=["sleep", "60"],
                                             network=name, detach=True, labels=LABELS)
    try:
        with pytest.raises(EngineError, match="cannot hold workspaces"):
            ensure_network(docker_client.api, name, LABELS)
    finally:
        container.remove(force=True)
