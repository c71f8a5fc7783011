"""Issue 18 item 1: any image, against a real `wsctl run` and real containers.

A workspace with `spec.agent.protocol: none` runs a plain `python3 -m http.server`
(spec.command/args/workingDir over the agent image, which then speaks no wsctl
protocol: it never registers). It is Ready from its `httpGet` readiness probe, run by
the controller against the container's address; stopping the server makes it
Degraded with the probe named, and its `exec` liveness probe (run through Docker)
recreates the container after its threshold, which serves again."""

from __future__ import annotations

from typing import Any

import docker
import pytest

from controller.testing.harness import ControllerProcess, condition, phase, wait_for
from tests.e2e.test_lifecycle import managed

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

# The server runs beside a shell that outlives it, so it can stop while the
# container keeps running; its pid is in /tmp/server.pid.
SERVE = ("python3 -m http.server 8000 --bind 0.0.0.0 >/dev/null 2>&1 & echo $! > /tmp/server.pid;"
         " while :; do sleep 1; done")
LIVE_CHECK = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/', timeout=1)"


def web_workspace(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace", "metadata": {"name": name},
        "spec": {
            "command": ["sh", "-c"], "args": [SERVE], "workingDir": "/workspace",
            "agent": {"protocol": "none"},
            "startupTimeoutSeconds": 60,
            "readinessProbe": {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 1,
                               "failureThreshold": 2},
            "livenessProbe": {"exec": {"command": ["python3", "-c", LIVE_CHECK]},
                              "periodSeconds": 1, "timeoutSeconds": 3,
                              "failureThreshold": 6},
            **extra,
        },
    }


def test_a_plain_http_server_is_ready_from_its_probe_degraded_when_it_stops_then_recreated(
        controller: ControllerProcess, docker_client: docker.DockerClient,
        cleanup: list[str]) -> None:
    name = "web"
    cleanup.append(name)
    controller.apply(web_workspace(name))
    obj = wait_for(lambda: (lambda o: o if phase(o) == "Online" else None)(controller.get(name)),
                   60, f"{name} Online from its readiness probe")
    assert condition(obj, "Ready")["reason"] == "ProbeSucceeded"
    old_id = obj["status"]["containerID"]
    config = docker_client.api.inspect_container(old_id)["Config"]
    assert (config["Entrypoint"], config["Cmd"], config["WorkingDir"]) == (
        ["sh", "-c"], [SERVE], "/workspace")
    # No protocol, but the token is still written for an agent that wants it.
    token = docker_client.containers.get(old_id).exec_run(
        ["sh", "-c", "test -s /configs/.auth_token && echo present"], user="10001:10001")
    assert token.output == b"present\n", token

    code, out, err = controller.cli("send", name, "hello")
    assert code != 0
    assert "spec.agent.protocol: none" in err + out and "a2aPort" in err + out
    assert "Traceback" not in err

    killed = docker_client.containers.get(old_id).exec_run(
        ["sh", "-c", "kill $(cat /tmp/server.pid)"], user="10001:10001")
    assert killed.exit_code == 0, killed.output

    def degraded() -> dict[str, Any] | None:
        o = controller.get(name)
        return o if condition(o, "Degraded").get("reason") == "ReadinessProbeFailed" else None

    obj = wait_for(degraded, 15, f"{name} Degraded ReadinessProbeFailed", interval=0.1)
    message = condition(obj, "Degraded")["message"]
    assert message.startswith("readinessProbe httpGet :8000/ failed 2 times in a row: "), message
    assert "refused" in message, message
    assert obj["status"]["containerID"] == old_id  # readiness alone never recreates

    def replaced() -> dict[str, Any] | None:
        o = controller.get(name)
        new = (o.get("status") or {}).get("containerID")
        return o if new not in (None, old_id) and phase(o) == "Online" else None

    after = wait_for(replaced, 40, f"{name} recreated by its liveness probe and Online",
                     interval=0.2)
    assert after["status"]["lastRecreateReason"] == "LivenessFailed"
    assert after["status"]["restartCount"] == 1
    warnings = [e for e in controller.describe(name)["events"] if e["type"] == "Warning"]
    assert any(e["reason"] == "LivenessFailed" and e["message"].startswith(
        "livenessProbe exec python3 -c ") and "failed 6 times in a row: exit code 1"
        in e["message"] for e in warnings), warnings
    assert [c.id for c in managed(docker_client, name)] == [after["status"]["containerID"]]
