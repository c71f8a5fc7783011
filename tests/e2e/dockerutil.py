"""Docker helpers for the end-to-end tests (tests may import docker; the package's
devtools do not)."""

from __future__ import annotations

import io
import tarfile

import docker


def read_token(client: docker.DockerClient, container_id: str) -> str:
    stream, _ = client.api.get_archive(container_id, "/configs/.auth_token")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile(".auth_token")
        assert member is not None
        return member.read().decode().strip()


def container_env(client: docker.DockerClient, container_id: str) -> dict[str, str]:
    env = client.api.inspect_container(container_id)["Config"]["Env"]
    return dict(item.split("=", 1) for item in env)


def token_file_mode(client: docker.DockerClient, container_id: str) -> tuple[int, int]:
    """(permission bits, owner uid) of the container's token file."""
    stream, _ = client.api.get_archive(container_id, "/configs/.auth_token")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.getmember(".auth_token")
        return member.mode & 0o777, member.uid
