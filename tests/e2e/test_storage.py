"""Issue 14: a workspace keeps its files through every heal, against a real `wsctl run`.

A file written with `wsctl exec` goes through restart, spec change, `docker kill`,
a lost token (the agent's 401 replaces the container), a controller SIGKILL in
the middle of a recreate, a liveness recreate, suspend/resume, and delete +
re-apply with reclaimPolicy Retain; after each, `wsctl exec cat` reads it back.
`delete --purge` then removes the volume. The reference agent keeps its
conversation on the volume: after a restart it sends the earlier turns.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import docker
import pytest
from docker.errors import NotFound

from controller.testing.harness import (
    ControllerProcess,
    FakeLLMThread,
    kill,
    phase,
    wait_for,
)
from tests.e2e.test_lifecycle import managed, online, side_controller, workspace

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]
__all__ = ["side_controller"]  # the fixture, used by name

AGENT = "10001:10001"


def container_of(proc: ControllerProcess, docker_client: docker.DockerClient,
                 name: str) -> Any:
    return docker_client.containers.get(proc.get(name)["status"]["containerID"])


def run_as_agent(container: Any, *command: str) -> str:
    code, output = container.exec_run(list(command), user=AGENT)
    text: str = output.decode(errors="replace")
    assert code == 0, f"{command}: exit {code}: {text}"
    return text


def volume_gone(client: docker.DockerClient, name: str) -> bool:
    try:
        client.volumes.get(name)
    except NotFound:
        return True
    return False


def wsctl_exec(proc: ControllerProcess, name: str, *command: str) -> str:
    """`wsctl exec NAME -- COMMAND` as a process of its own; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "controller", "exec", name, "--server", proc.server,
         "--data-dir", str(proc.data_dir), "--", *command],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{command}: exit {done.returncode}: {done.stderr}"
    return done.stdout


def replaced(proc: ControllerProcess, name: str, old: str, timeout: float = 90
             ) -> dict[str, Any]:
    """The workspace Online on a container other than `old`."""
    try:
        return wait_for(lambda: (lambda o: o if phase(o) == "Online"
                                 and o["status"].get("containerID") not in (None, old)
                                 else None)(proc.get(name)), timeout,
                        f"{name} on a new container")
    except AssertionError as exc:
        tail = "\n".join(proc.log().splitlines()[-25:])
        raise AssertionError(f"{exc}\nstatus: {proc.get(name).get('status')}\n"
                             f"controller log:\n{tail}") from None


def test_files_survive_every_heal_and_go_only_with_purge(
        agent_image: str, fake_llm: FakeLLMThread, docker_client: docker.DockerClient,
        side_controller: Callable[[str], ControllerProcess]) -> None:
    proc = side_controller("store")
    proc.start()
    name = "keeper"
    volume_name = f"wsctl-{proc.instance}-default.{name}-workspace"
    content = "notes " + secrets.token_hex(8)
    manifest = workspace(name, fake_llm.port)
    manifest["spec"]["livenessTimeoutSeconds"] = 10
    proc.apply(manifest)
    first = online(proc, name)
    container = container_of(proc, docker_client, name)
    # The volume: created before the first container, labelled, mounted rw, the agent's.
    volume = docker_client.volumes.get(volume_name)
    assert volume.attrs["Labels"]["wsctl.dev/workspace"] == f"default.{name}"
    assert volume.attrs["Labels"]["wsctl.dev/workspace-uid"]
    (mount,) = [m for m in container.attrs["Mounts"] if m.get("Name") == volume_name]
    assert mount["Destination"] == "/workspace" and mount["RW"] is True
    assert wsctl_exec(proc, name, "stat", "-c", "%u", "/workspace").strip() == "10001"
    wsctl_exec(proc, name, "sh", "-c",
               f"mkdir -p /workspace/notes && printf '%s' '{content}' > /workspace/notes/a.txt")

    def still_there(why: str) -> None:
        text = wsctl_exec(proc, name, "cat", "/workspace/notes/a.txt")
        assert text == content, f"after {why}: {text!r}"

    current = first["status"]["containerID"]
    # 1. restart
    assert proc.cli("restart", name)[0] == 0
    current = replaced(proc, name, current)["status"]["containerID"]
    still_there("wsctl restart")
    # 2. spec change
    changed = workspace(name, fake_llm.port, env={"MOOD": "changed"})
    changed["spec"]["livenessTimeoutSeconds"] = 10
    proc.apply(changed)
    current = replaced(proc, name, current)["status"]["containerID"]
    still_there("a spec change")
    # 3. docker kill
    docker_client.containers.get(current).kill()
    current = replaced(proc, name, current)["status"]["containerID"]
    still_there("docker kill")
    # 4. a lost token (the agent's 401 makes the controller replace the container)
    lost = docker_client.containers.get(current)
    run_as_agent(lost, "rm", "-f", "/configs/.auth_token")
    lost.restart(timeout=2)
    current = replaced(proc, name, current)["status"]["containerID"]
    still_there("a lost token")
    # 5. the controller SIGKILLed in the middle of a recreate
    proc.stop()
    proc.start({"WSCTL_DEBUG_STALL_AFTER_OP": "StopContainer"})
    assert proc.cli("restart", name)[0] == 0
    wait_for(lambda: "stalling after StopContainer" in proc.log(), 30, "the stall point")
    kill(proc)
    proc.start()
    current = replaced(proc, name, current)["status"]["containerID"]
    still_there("a controller SIGKILL mid-recreate")
    # 6. a liveness recreate: the agent frozen past livenessTimeoutSeconds
    frozen = docker_client.containers.get(current)
    frozen.pause()
    after = replaced(proc, name, current, timeout=60)
    assert after["status"]["lastRecreateReason"] == "LivenessFailed"
    current = after["status"]["containerID"]
    still_there("a liveness recreate")
    # 7. suspend and resume
    assert proc.cli("suspend", name)[0] == 0
    wait_for(lambda: phase(proc.get(name)) == "Suspended", 30, "Suspended")
    assert proc.cli("resume", name)[0] == 0
    current = online(proc, name)["status"]["containerID"]
    still_there("suspend and resume")
    # The agent remembers across those restarts: its history is on the volume.
    code, _, err = proc.cli("send", name, "my name is Ada")
    assert code == 0, err
    assert proc.cli("restart", name)[0] == 0
    current = replaced(proc, name, current)["status"]["containerID"]
    code, _, err = proc.cli("send", name, "what is my name?")
    assert code == 0, err
    last = fake_llm.llm.requests[-1]
    assert last.text == "what is my name?" and "my name is Ada" in last.earlier
    # 8. delete with Retain, then the same namespace/name again
    code, out, err = proc.cli("describe", name, "-o", "json")
    assert code == 0, err
    storage = json.loads(out)["storage"]
    assert storage["volume"] == volume_name and storage["reclaimPolicy"] == "Retain"
    assert storage["sizeBytes"] is not None and storage["sizeBytes"] >= len(content)
    assert proc.cli("delete", name)[0] == 0
    wait_for(lambda: proc.cli("get", name)[0] == 1, 30, "workspace deleted")
    assert not managed(docker_client, name, proc.instance)
    code, out, err = proc.cli("volumes")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith(volume_name))
    assert f"default/{name}" in row and "retained" in row
    proc.apply(changed)
    online(proc, name)
    still_there("delete and re-apply with Retain")
    code, out, _ = proc.cli("describe", name)
    assert "VolumeReattached" in out and volume_name in out
    # 9. delete --purge: the volume goes once the container is gone
    assert proc.cli("delete", name, "--purge")[0] == 0
    wait_for(lambda: proc.cli("get", name)[0] == 1, 30, "workspace deleted")
    wait_for(lambda: volume_gone(docker_client, volume_name), 30,
             "the volume removed by --purge")


def test_reclaim_policy_delete_removes_the_volume_with_the_workspace(
        agent_image: str, fake_llm: FakeLLMThread, docker_client: docker.DockerClient,
        side_controller: Callable[[str], ControllerProcess]) -> None:
    proc = side_controller("reclaim")
    proc.start()
    manifest = workspace("brief", fake_llm.port)
    manifest["spec"]["storage"] = {"mountPath": "/home/agent/work", "reclaimPolicy": "Delete"}
    proc.apply(manifest)
    online(proc, "brief")
    container = container_of(proc, docker_client, "brief")
    volume_name = f"wsctl-{proc.instance}-default.brief-workspace"
    # Another mount path than the image's /workspace: chowned for the agent, no copy-up.
    assert run_as_agent(container, "stat", "-c", "%u", "/home/agent/work").strip() == "10001"
    run_as_agent(container, "sh", "-c", "echo x > /home/agent/work/f")
    assert proc.cli("delete", "brief")[0] == 0
    wait_for(lambda: volume_gone(docker_client, volume_name), 30,
             "the volume removed with its workspace")
