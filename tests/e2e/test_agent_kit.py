"""Issue 18: an agent wsctl did not write, on the agent kit, against a real `wsctl run`.

The image is the example (examples/kit-agent: 23 lines on `wsctl_kit`) on top of
wsctl/agent:latest, built here with docker-py from the example's own Dockerfile. It
registers, heartbeats healthy (Ready) and answers `wsctl send` through the controller,
which it lets in by the credential the controller wrote for it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import DockerException

from controller.testing.harness import ControllerProcess, FakeLLMThread, condition, wait_for
from tests.e2e.test_lifecycle import managed, online, workspace
from tests.exposition import parse

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kit-agent"
TAG = f"wsctl-e2e/kit-agent:{os.getpid()}"
HEARTBEAT_TTL = 3.0  # three of the test controller's 1 s heartbeats (harness.FAST_FLAGS)


@pytest.fixture(scope="module")
def kit_image(agent_image: str, docker_client: docker.DockerClient) -> Iterator[str]:
    """The example's image, on the wsctl/agent:latest of these sources."""
    with tempfile.TemporaryDirectory(prefix="wsctl-kit-agent-") as ctx:
        for name in ("Dockerfile", "agent.py"):
            shutil.copyfile(EXAMPLE / name, Path(ctx) / name)
        docker_client.images.build(path=ctx, tag=TAG, rm=True, forcerm=True, pull=False)
    yield TAG
    with contextlib.suppress(DockerException):
        docker_client.images.remove(TAG, force=True)


@pytest.fixture(scope="module")
def too_new_image(agent_image: str, docker_client: docker.DockerClient) -> Iterator[str]:
    """The reference agent with its kit claiming protocol 2, which this controller
    does not speak (an image built with a newer wsctl than the one running it)."""
    tag = f"wsctl-e2e/too-new-agent:{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="wsctl-too-new-") as ctx:
        (Path(ctx) / "Dockerfile").write_text(
            f"FROM {agent_image}\nUSER root\n"
            "RUN sed -i 's/^PROTOCOL_VERSION = 1$/PROTOCOL_VERSION = 2/' "
            "/opt/wsctl/wsctl_agent/kit.py && grep -q '^PROTOCOL_VERSION = 2$' "
            "/opt/wsctl/wsctl_agent/kit.py\nUSER 10001\n")
        docker_client.images.build(path=ctx, tag=tag, rm=True, forcerm=True, pull=False)
    yield tag
    with contextlib.suppress(DockerException):
        docker_client.images.remove(tag, force=True)


def ready(controller: ControllerProcess, name: str) -> dict[str, Any] | None:
    obj = controller.get(name)
    return obj if condition(obj, "Ready").get("status") == "True" else None


def test_an_agent_on_the_kit_goes_online_and_answers_wsctl_send(
        controller: ControllerProcess, fake_llm: FakeLLMThread, kit_image: str,
        docker_client: docker.DockerClient, cleanup: list[str]) -> None:
    name = "kit-agent"
    cleanup.append(name)
    manifest = workspace(name, fake_llm.port)
    manifest["spec"]["image"] = kit_image
    controller.apply(manifest)
    online(controller, name)
    wait_for(lambda: ready(controller, name), 30, f"{name} Ready")
    # A register alone makes it Ready; only heartbeats keep it so past the TTL (3 s here).
    until = time.monotonic() + 3 * HEARTBEAT_TTL
    while time.monotonic() < until:
        obj = controller.get(name)
        assert ready(controller, name), obj["status"]["conditions"]
        time.sleep(0.5)

    code, out, err = controller.cli("send", name, "hello from the kit test")
    assert code == 0, err
    assert "kit-agent heard: hello from the kit test" in out

    (container,) = managed(docker_client, name)
    assert container.image.tags == [kit_image]
    logs = container.logs().decode()
    assert "event=register_ok" in logs  # the kit's own log lines, on stderr
    assert "event=heartbeat_ok status=healthy" in logs
    assert "Traceback" not in logs


def test_an_agent_speaking_a_newer_protocol_is_told_so_in_the_status(
        controller: ControllerProcess, fake_llm: FakeLLMThread, too_new_image: str,
        cleanup: list[str]) -> None:
    name = "too-new"
    cleanup.append(name)
    refused_before = protocol_refused(controller)
    manifest = workspace(name, fake_llm.port)
    manifest["spec"]["image"] = too_new_image
    controller.apply(manifest)

    def register_failed() -> dict[str, Any] | None:
        degraded = condition(controller.get(name), "Degraded")
        return degraded if degraded.get("reason") == "RegisterFailed" else None

    degraded = wait_for(register_failed, 60, f"{name} Degraded RegisterFailed")
    assert degraded["message"].startswith("unsupported_protocol: X-Wsctl-Agent-Protocol: 2 "), \
        degraded
    assert "speaks 1" in degraded["message"]
    assert controller.get(name)["status"].get("phase") != "Online"
    assert protocol_refused(controller) > refused_before  # and an operator sees it counted


def protocol_refused(controller: ControllerProcess) -> float:
    return parse(controller.client().request("GET", "/metrics", raw=True)).value(
        "wsctl_registry_protocol_refused_total")
