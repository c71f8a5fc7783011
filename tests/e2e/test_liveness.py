"""Issue 14 item 4: health acted on, against a real `wsctl run` (heartbeats every
second, TTL 3 s, resync 300 s: what happens on time is driven by the plan's requeue).

A container `docker pause`d (its agent cannot heartbeat) past the workspace's
livenessTimeoutSeconds is replaced, reason LivenessFailed, and comes back Online;
one paused for less is reported HeartbeatStale and left alone."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import docker
import pytest

from controller.core.model import MIN_LIVENESS_TIMEOUT_SECONDS
from controller.testing.harness import ControllerProcess, FakeLLMThread, condition, phase, wait_for
from tests.e2e.test_lifecycle import (
    docker_time,
    managed,
    online,
    side_controller,
    workspace,
)

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]
__all__ = ["side_controller"]  # the fixture, used by name

LIVENESS = MIN_LIVENESS_TIMEOUT_SECONDS  # 10 s, the least the spec allows


def with_liveness(name: str, llm_port: int) -> dict[str, Any]:
    manifest = workspace(name, llm_port)
    manifest["spec"]["livenessTimeoutSeconds"] = LIVENESS
    return manifest


def stale(controller: ControllerProcess, name: str) -> dict[str, Any] | None:
    obj = controller.get(name)
    return obj if condition(obj, "Degraded").get("reason") == "HeartbeatStale" else None


def test_a_container_paused_past_the_liveness_timeout_is_recreated(
        controller: ControllerProcess, fake_llm: FakeLLMThread,
        docker_client: docker.DockerClient, cleanup: list[str]) -> None:
    name = "hung"
    cleanup.append(name)
    controller.apply(with_liveness(name, fake_llm.port))
    old_id = online(controller, name)["status"]["containerID"]
    paused_at = datetime.now(UTC)
    docker_client.api.pause(old_id)
    wait_for(lambda: stale(controller, name), 10, f"{name} Degraded HeartbeatStale")

    def replaced() -> dict[str, Any] | None:
        obj = controller.get(name)
        new = (obj.get("status") or {}).get("containerID")
        return obj if new not in (None, old_id) and phase(obj) == "Online" else None

    after = wait_for(replaced, 40, f"{name} recreated and Online again", interval=0.2)
    status = after["status"]
    assert status["lastRecreateReason"] == "LivenessFailed"
    assert status["restartCount"] == 1
    # Not before the timeout (the last beat was at most 1 s before the pause), and on
    # time: the plan requeued itself at the deadline (the resync is 300 s away).
    created = docker_time(docker_client.api.inspect_container(
        status["containerID"])["Created"])
    waited = (created - paused_at).total_seconds()
    assert LIVENESS - 1.5 <= waited <= LIVENESS + 5, waited
    described = controller.describe(name)
    assert described["diagnostics"]["container_id"] == old_id
    assert described["diagnostics"]["reason"] == "LivenessFailed"
    warnings = [e for e in described["events"] if e["type"] == "Warning"]
    assert any(e["reason"] == "LivenessFailed" and f"livenessTimeoutSeconds {LIVENESS}"
               in e["message"] for e in warnings), warnings
    assert [c.id for c in managed(docker_client, name)] == [status["containerID"]]
    metrics = controller.client().request("GET", "/metrics", raw=True)
    assert re.search(r'^wsctl_recreates_total\{reason="LivenessFailed"\} [1-9]', metrics, re.M)


def test_a_container_paused_shorter_than_the_liveness_timeout_is_left_alone(
        controller: ControllerProcess, fake_llm: FakeLLMThread,
        docker_client: docker.DockerClient, cleanup: list[str]) -> None:
    """As the chaos `pause` fault does: past the heartbeat TTL, not the liveness timeout."""
    name = "napping"
    cleanup.append(name)
    controller.apply(with_liveness(name, fake_llm.port))
    cid = online(controller, name)["status"]["containerID"]
    paused = time.monotonic()
    docker_client.api.pause(cid)
    wait_for(lambda: stale(controller, name), 10, f"{name} Degraded HeartbeatStale")
    time.sleep(max(0.0, paused + 6 - time.monotonic()))  # the pause itself, 6 s
    docker_client.api.unpause(cid)
    back = online(controller, name, 10)
    assert back["status"]["containerID"] == cid
    # Past the moment a liveness timeout counted from the pause would have fired:
    time.sleep(max(0.0, paused + LIVENESS + 2 - time.monotonic()))
    now = controller.get(name)
    assert phase(now) == "Online"
    assert now["status"]["containerID"] == cid and now["status"]["restartCount"] == 0
    assert "lastRecreateReason" not in now["status"]
    assert [c.id for c in managed(docker_client, name)] == [cid]
    assert not [e for e in controller.describe(name)["events"]
                if e["reason"] in ("LivenessFailed", "Recreating")]


def test_silence_while_the_controller_was_down_is_not_a_liveness_failure(
        agent_image: str, fake_llm: FakeLLMThread, docker_client: docker.DockerClient,
        side_controller: Callable[[str], ControllerProcess]) -> None:
    """A controller away for longer than the timeout (an upgrade, a crash) must not
    replace every workspace when it is back: its agents could not heartbeat to it."""
    proc = side_controller("away")
    proc.start()
    proc.apply(with_liveness("away", fake_llm.port))
    cid = online(proc, "away")["status"]["containerID"]
    proc.stop()
    time.sleep(LIVENESS + 2)  # the agent's last heartbeat is older than the timeout
    before = len(proc.log())
    proc.start()  # its first resync reconciles every workspace at once
    after = wait_for(lambda: (lambda text: text if "default/away: reconciled in" in text
                              else None)(proc.log()[before:]), 20,
                     "a reconcile of away after the restart")
    assert "default/away: recreate" not in after
    back = online(proc, "away", 20)
    assert back["status"]["containerID"] == cid and back["status"]["restartCount"] == 0
    assert [c.id for c in managed(docker_client, "away", proc.instance)] == [cid]
