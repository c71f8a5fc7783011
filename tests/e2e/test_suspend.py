"""Issue 14: idle suspend and wake-on-request, against a real `wsctl run`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import pytest

from controller.testing.harness import ControllerProcess, FakeLLMThread, condition, phase, wait_for
from tests.e2e.test_lifecycle import managed, online, workspace

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

AGENT = "10001:10001"


def events(controller: ControllerProcess, name: str) -> list[dict[str, Any]]:
    code, out, err = controller.cli("describe", name, "-o", "json")
    assert code == 0, err
    found: list[dict[str, Any]] = json.loads(out)["events"]
    return found


def metric(controller: ControllerProcess, name: str) -> float:
    text = controller.client().request("GET", "/metrics", raw=True)
    for line in str(text).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_idle_workspace_suspends_keeps_files_and_wakes_on_a_message(
        controller: ControllerProcess, fake_llm: FakeLLMThread,
        docker_client: docker.DockerClient, cleanup: list[str]) -> None:
    name = "sleepy"
    cleanup.append(name)
    manifest = workspace(name, fake_llm.port)
    manifest["spec"]["idleTimeoutSeconds"] = 10
    controller.apply(manifest)
    first = online(controller, name)
    box = docker_client.containers.get(first["status"]["containerID"])
    code, out = box.exec_run(["sh", "-c", "echo kept > /workspace/kept.txt"], user=AGENT)
    assert code == 0, out
    code, _, err = controller.cli("send", name, "hello before sleeping")
    assert code == 0, err
    last_message = time.monotonic()
    asleep = wait_for(lambda: (lambda o: o if phase(o) == "Suspended" else None)(
        controller.get(name)), 30, f"{name} Suspended")
    slept_after = time.monotonic() - last_message
    assert 10 <= slept_after <= 20, slept_after
    assert condition(asleep, "Ready")["reason"] == "Suspended"
    assert condition(asleep, "Degraded")["status"] == "False"  # a state, not a degradation
    assert not [c for c in managed(docker_client, name) if c.status == "running"]
    assert any(e["reason"] == "Suspended" and "idle for 10s" in e["message"]
               for e in events(controller, name))
    restarts = asleep["status"]["restartCount"]
    wakes_before = metric(controller, "wsctl_wake_seconds_count")

    # Two messages at once while suspended (two real `wsctl send` processes): one
    # wake, both answered.
    def send(text: str) -> tuple[int, str, str]:
        done = subprocess.run(
            [sys.executable, "-m", "controller", "send", name, text, "--server",
             controller.server, "--data-dir", str(controller.data_dir)],
            capture_output=True, text=True, timeout=240, check=False)
        return done.returncode, done.stdout, done.stderr
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(send, ["wake up one", "wake up two"]))
    assert [a[0] for a in answers] == [0, 0], answers
    assert "fake-llm heard: wake up one" in answers[0][1]
    assert "fake-llm heard: wake up two" in answers[1][1]
    awake = controller.get(name)
    assert phase(awake) == "Online" and awake["status"]["restartCount"] == restarts
    assert sum(1 for e in events(controller, name) if e["reason"] == "Woken") == 1
    assert metric(controller, "wsctl_wake_seconds_count") == wakes_before + 1
    (running,) = [c for c in managed(docker_client, name) if c.status == "running"]
    code, out = running.exec_run(["cat", "/workspace/kept.txt"], user=AGENT)
    assert (code, out.decode().strip()) == (0, "kept")


def test_suspend_and_resume_by_hand(
        controller: ControllerProcess, fake_llm: FakeLLMThread,
        docker_client: docker.DockerClient, cleanup: list[str]) -> None:
    name = "napper"
    cleanup.append(name)
    controller.apply(workspace(name, fake_llm.port))
    online(controller, name)
    code, out, err = controller.cli("suspend", name)
    assert code == 0 and "suspending" in out, err
    wait_for(lambda: phase(controller.get(name)) == "Suspended", 30, "Suspended")
    assert not [c for c in managed(docker_client, name) if c.status == "running"]
    assert "already suspended" in controller.cli("suspend", name)[1]
    code, out, err = controller.cli("resume", name)
    assert code == 0 and "resumed" in out, err
    assert phase(controller.get(name)) == "Online"  # resume waits until it is
    assert "was not suspended" in controller.cli("resume", name)[1]


def test_a_message_right_after_a_suspend_is_answered(
        controller: ControllerProcess, fake_llm: FakeLLMThread, cleanup: list[str]) -> None:
    """The race the chaos harness found: suspend, then a message at once. Whether the
    suspension was acted on yet or not, the message is answered, promptly."""
    name = "jumpy"
    cleanup.append(name)
    controller.apply(workspace(name, fake_llm.port))
    online(controller, name)
    for i in range(8):
        assert controller.cli("suspend", name)[0] == 0
        started = time.monotonic()
        code, out, err = controller.cli("send", name, f"still there {i}?")
        assert code == 0 and f"fake-llm heard: still there {i}?" in out, (i, err)
        assert time.monotonic() - started < 20, i
