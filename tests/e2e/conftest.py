"""Session fixtures for the lifecycle tests: engine, image, network, fake LLM, controller."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from controller.adapters.docker_engine import EngineError, ensure_network, remove_networks
from controller.testing.harness import ControllerProcess, FakeLLMThread, new_dir, remove_dir

NETWORK = f"wsctl-e2e-{os.getpid()}"
INSTANCE = f"e2e{os.getpid()}"
# Planted secret values: the final test greps every output for them.
PLANTED_KEY = "sk-e2e-PLANTED-" + secrets.token_hex(12)


@pytest.fixture(scope="session")
def gateway(docker_client: docker.DockerClient) -> Iterator[str]:
    # As wsctl makes it: internal, no traffic between containers.
    yield ensure_network(docker_client.api, NETWORK, {"wsctl.dev/managed-by": "wsctl-e2e"})
    for container in docker_client.containers.list(
            all=True, filters={"label": f"wsctl.dev/instance={INSTANCE}"}):
        container.remove(force=True)
    for crashed in docker_client.containers.list(
            all=True, filters={"label": f"wsctl.dev/instance={INSTANCE}-crash"}):
        crashed.remove(force=True)
    with contextlib.suppress(EngineError):  # with the `open` one wsctl made beside it
        remove_networks(docker_client.api, NETWORK)
    for volume in docker_client.volumes.list():
        if volume.name.startswith(f"wsctl-{INSTANCE}"):
            volume.remove(force=True)


@pytest.fixture(scope="session")
def fake_llm(gateway: str) -> Iterator[FakeLLMThread]:
    server = FakeLLMThread(gateway, PLANTED_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def log_files() -> Iterator[list[Path]]:
    """Every controller log of the session, for the secret scan; their folders go after."""
    files: list[Path] = []
    yield files
    for folder in {f.parent for f in files}:
        remove_dir(folder)


@pytest.fixture(scope="session")
def controller(agent_image: str, gateway: str, fake_llm: FakeLLMThread,
               log_files: list[Path]) -> Iterator[ControllerProcess]:
    data_dir = new_dir("wsctl-e2e-")
    proc = ControllerProcess(data_dir=data_dir, network=NETWORK, instance=INSTANCE,
                             gateway=gateway,
                             env={"WSCTL_SECRET_E2E_LLM_API_KEY": PLANTED_KEY})
    proc.log_files = log_files
    proc.start()
    yield proc
    proc.stop()
    remove_dir(data_dir)


@pytest.fixture
def cleanup(controller: ControllerProcess) -> Iterator[list[str]]:
    """Names of workspaces the test made: deleted after it."""
    names: list[str] = []
    yield names
    for name in names:
        controller.cli("delete", name)
