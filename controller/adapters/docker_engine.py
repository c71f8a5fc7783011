"""Docker engine adapter: the only place (with images.py) that imports `docker`."""

from __future__ import annotations

import docker
from docker.errors import DockerException


class EngineUnavailable(Exception):
    """No Docker engine answers."""


def connect(timeout: int = 60) -> docker.DockerClient:
    """A client for the engine at $DOCKER_HOST or the local socket, checked with a ping."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        raise EngineUnavailable(
            f"no Docker engine answers ({exc.__class__.__name__}); "
            "start one with scripts/ensure-docker.sh or set DOCKER_HOST"
        ) from None
    return client
