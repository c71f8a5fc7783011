"""Throwaway containers take their anonymous volumes with them.

The agent image declares `VOLUME /configs`; a container of it that does not mount a
named volume there (the one-off chown of a new storage volume) gets an anonymous
volume, which `docker rm` without `v` leaves behind dangling: 59 had piled up on the
development machine. Every removal wsctl does now passes `v`.
"""

from __future__ import annotations

import secrets

import docker
import pytest

from controller.adapters.docker_engine import DockerEngine
from controller.core.containerspec import VolumeSpec

pytestmark = [pytest.mark.docker]


def dangling(client: docker.DockerClient) -> set[str]:
    return {v.name for v in client.volumes.list(filters={"dangling": True})}


async def test_the_chown_of_a_new_volume_leaves_no_anonymous_volume(
        docker_client: docker.DockerClient, agent_image: str) -> None:
    name = f"wsctl-test-{secrets.token_hex(4)}-workspace"
    engine = DockerEngine(docker_client, instance="test-dangling")
    before = dangling(docker_client)
    try:
        assert await engine.ensure_volume(VolumeSpec(
            name=name, labels={"wsctl.dev/managed-by": "wsctl"}, mount_path="/data",
            owner_image=agent_image)) is None  # created now, chowned by a root container
        left = dangling(docker_client) - before - {name}
        assert left == set(), f"the chown container left {left}"
    finally:
        docker_client.volumes.get(name).remove(force=True)
