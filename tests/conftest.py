"""Fixtures shared by the suites that drive the real Docker engine (e2e, operator)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException

from controller.adapters.images import DEFAULT_TAG, ensure_agent_image
from controller.core.settings import default_cache_dir


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as exc:
        pytest.fail(f"no Docker engine answers ({exc.__class__.__name__}); "
                    "run scripts/bootstrap docker (make test does)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def agent_image(docker_client: docker.DockerClient) -> str:
    cache = Path(os.environ.get("WSCTL_CACHE_DIR") or default_cache_dir())
    ensure_agent_image(docker_client, tag=DEFAULT_TAG, cache_dir=cache, progress=print)
    return DEFAULT_TAG
