"""Docker calls at the edges. One that finds no engine raises EngineUnavailable (an
EngineUnavailableError the APIs answer as 503), naming the call, not a raw
requests.ConnectionError that becomes a 500; the logs of a container removed meanwhile
are None (404), not a 500."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from controller.adapters.docker_engine import DockerEngine, EngineUnavailable
from controller.core.errors import EngineUnavailableError

pytestmark = pytest.mark.docker


async def test_a_call_to_an_engine_that_went_away(tmp_path: Path) -> None:
    # The API version is pinned so the client is made without asking the engine,
    # as a controller's client was made while the engine still answered.
    socket = tmp_path / "gone.sock"
    client = docker.DockerClient(base_url=f"unix://{socket}", version="1.41", timeout=5)
    engine = DockerEngine(client, instance="gone")
    with pytest.raises(EngineUnavailable) as caught:
        await engine.list_containers("default.alice")
    assert isinstance(caught.value, EngineUnavailableError)
    assert "(list: no socket there)" in str(caught.value)
    with pytest.raises(EngineUnavailableError):
        await engine.start("abc")


async def test_logs_of_a_container_removed_meanwhile_are_none(
        docker_client: docker.DockerClient, agent_image: str) -> None:
    """The fuzzer found GET /logs answering 500 when the container went away between
    the list and the logs call (a restart or delete in flight); it is 404 now."""
    container = docker_client.containers.create(agent_image, command=["true"],
                                                labels={"wsctl.dev/test": "logs-gone"})
    engine = DockerEngine(docker_client, instance="logs-gone")
    assert container.id is not None
    assert await engine.logs(container.id) == ""
    container.remove(force=True)
    assert await engine.logs(container.id) is None
