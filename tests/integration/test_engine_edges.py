"""A Docker call that finds no engine raises EngineUnavailable (an
EngineUnavailableError the APIs answer as 503), naming the call, not a raw
requests.ConnectionError that becomes a 500."""

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
