"""The agent image: built by the project's builder, run as uid 10001, answers /healthz.

Needs a Docker engine (``scripts/bootstrap docker``); without one the shared
``docker_client`` fixture (tests/conftest.py) fails the tests rather than skipping
them. The first run may build the
local base with debootstrap (root, about a minute); later runs reuse it.
Containers are named ``wsctl-test-*``, publish on 127.0.0.1 only and are always
removed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import NotFound
from docker.models.containers import Container

from controller.adapters.images import (
    DEFAULT_TAG,
    SOURCE_HASH_LABEL,
    ImageBuildResult,
    build_agent_image,
    ensure_agent_image,
    source_hash,
)
from controller.core.settings import default_cache_dir

pytestmark = pytest.mark.docker

TOKEN = "itest-token-" + "c" * 40
A2A = "itest-a2a-credential-" + "d" * 32
AGENT_UID = 10001


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    env = os.environ.get("WSCTL_CACHE_DIR")
    return Path(env) if env else default_cache_dir()


@pytest.fixture(scope="session")
def agent_image(docker_client: docker.DockerClient, cache_dir: Path) -> ImageBuildResult:
    lines: list[str] = []
    result = build_agent_image(
        docker_client, tag=DEFAULT_TAG, cache_dir=cache_dir, progress=lines.append
    )
    assert result.tag == DEFAULT_TAG
    assert result.image_id.startswith("sha256:")
    assert lines, "the builder reports progress"
    return result


def _token_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, value in ((".auth_token", TOKEN + "\n"), (".a2a_credential", A2A)):
            data = value.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            info.uid = info.gid = AGENT_UID
            info.uname = info.gname = "agent"
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def agent_container(
    docker_client: docker.DockerClient, agent_image: ImageBuildResult
) -> Iterator[Container]:
    name = f"wsctl-test-agent-{uuid.uuid4().hex[:8]}"
    container = docker_client.containers.create(
        agent_image.tag,
        name=name,
        hostname=name,
        environment={
            "WSCTL_WORKSPACE_ID": "test.itest",
            "WSCTL_WORKSPACE_NAME": "itest",
            # nothing listens there: the agent keeps retrying inside its own container
            "WSCTL_REGISTRY_URL": "http://127.0.0.1:9",
            "WSCTL_HEARTBEAT_SECONDS": "1",
            "LOG_LEVEL": "info",
        },
        # (ip, None): a random host port on 127.0.0.1; the stubs only allow an int port
        ports={"8000/tcp": ("127.0.0.1", None)},  # type: ignore[dict-item]
        labels={"wsctl.dev/test": "agent-image"},
    )
    try:
        assert container.put_archive("/configs", _token_tar())
        container.start()
        yield container
    finally:
        with contextlib.suppress(NotFound):
            container.remove(force=True, v=True)


def _published_port(container: Container) -> int:
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"]
    assert bindings, "port 8000 is published"
    assert bindings[0]["HostIp"] == "127.0.0.1"
    return int(bindings[0]["HostPort"])


def _get_json(url: str, timeout: float = 2.0, credential: str | None = A2A
              ) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if credential is not None:
        request.add_header("Authorization", f"Bearer {credential}")
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read())


def _poll_healthz(port: int, deadline_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            status, body = _get_json(f"http://127.0.0.1:{port}/healthz")
            if status == 200:
                assert isinstance(body, dict)
                return body
        except (urllib.error.URLError, ConnectionError, OSError, ValueError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"/healthz did not answer within {deadline_s}s: {last!r}")


def _exec(container: Container, *cmd: str) -> str:
    result = container.exec_run(list(cmd))
    output = result.output.decode() if isinstance(result.output, bytes) else str(result.output)
    assert result.exit_code == 0, f"{cmd} failed: {output}"
    return output.strip()


def test_image_is_labelled_with_source_hash(
    docker_client: docker.DockerClient, agent_image: ImageBuildResult
) -> None:
    image = docker_client.images.get(agent_image.tag)
    labels = image.labels
    assert labels["org.opencontainers.image.title"] == "wsctl-agent"
    assert labels[SOURCE_HASH_LABEL] == source_hash()
    config = image.attrs["Config"]
    assert config["User"] == "10001"
    assert config["Cmd"] == ["python3", "-m", "wsctl_agent"]
    assert "/configs" in (config.get("Volumes") or {})
    assert "8000/tcp" in (config.get("ExposedPorts") or {})
    assert "PYTHONPATH=/opt/wsctl" in config["Env"]


def test_second_ensure_is_a_fast_no_op(
    docker_client: docker.DockerClient, agent_image: ImageBuildResult, cache_dir: Path
) -> None:
    started = time.monotonic()
    again = ensure_agent_image(
        docker_client, tag=agent_image.tag, cache_dir=cache_dir, progress=lambda _: None
    )
    elapsed = time.monotonic() - started
    assert again.built is False
    assert again.image_id == docker_client.images.get(agent_image.tag).id
    assert elapsed < 5.0, f"up-to-date check took {elapsed:.1f}s"


def test_container_runs_as_agent_and_serves_healthz(agent_container: Container) -> None:
    port = _published_port(agent_container)
    health = _poll_healthz(port)
    # no LLM credential in this container: reported, not hidden
    assert health == {
        "status": "unhealthy",
        "error_detail": "llm-auth: no ANTHROPIC_AUTH_TOKEN set",
    }

    status, card = _get_json(f"http://127.0.0.1:{port}/.well-known/agent.json")
    assert status == 200 and card["name"] == "itest"
    with pytest.raises(urllib.error.HTTPError) as refused:  # the port is the controller's
        _get_json(f"http://127.0.0.1:{port}/.well-known/agent.json", credential=None)
    assert refused.value.code == 401

    uid_line = next(
        ln
        for ln in _exec(agent_container, "cat", "/proc/1/status").splitlines()
        if ln.startswith("Uid:")
    )
    assert uid_line.split()[1:] == [str(AGENT_UID)] * 4
    assert _exec(agent_container, "stat", "-c", "%a %u %g", "/configs/.auth_token") == (
        f"600 {AGENT_UID} {AGENT_UID}"
    )
    assert _exec(agent_container, "stat", "-c", "%a %u", "/configs") == f"700 {AGENT_UID}"
    version = _exec(agent_container, "python3", "-c", "import sys; print(sys.version_info[:2])")
    assert version == "(3, 11)"
    # the agent kit, importable by any Python agent in the image (docs/agents.md)
    assert _exec(agent_container, "python3", "-c",
                 "import wsctl_kit; print(wsctl_kit.__file__, wsctl_kit.PROTOCOL_VERSION)"
                 ) == "/opt/wsctl/wsctl_kit.py 1"
    assert _exec(agent_container, "sh", "-c", "readlink -f /usr/bin/python3 || command -v python3")


def test_container_stops_promptly_on_sigterm_without_leaking_the_token(
    agent_container: Container,
) -> None:
    port = _published_port(agent_container)
    _poll_healthz(port)
    started = time.monotonic()
    agent_container.stop(timeout=10)
    elapsed = time.monotonic() - started
    agent_container.reload()
    assert agent_container.attrs["State"]["ExitCode"] == 0
    assert elapsed < 5.0, f"stop took {elapsed:.1f}s (SIGTERM not handled?)"
    logs = agent_container.logs().decode()
    assert "event=start" in logs
    assert "event=register_unreachable" in logs
    assert TOKEN not in logs
