"""Only the controller talks to an agent (issue 16, item 2): a real `wsctl run`, real
agent containers. The agent's A2A port answers only the credential the controller
wrote into that container before it started; another workspace (by its container
name on the shared network) and a local process (on the published 127.0.0.1 port)
get 401, each refusal is counted in /metrics, and `wsctl send` still works."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import docker
import pytest

from controller.core.a2a import message_send
from controller.testing.harness import ControllerProcess, FakeLLMThread, wait_for
from tests.e2e.test_exec_cp import wsctl
from tests.e2e.test_lifecycle import online, workspace
from tests.exposition import parse

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

# From inside a workspace: one A2A call to another agent, printing the status.
PROBE = """
import json, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1], data=json.dumps({
    "jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": {
        "kind": "message", "role": "user", "messageId": "m",
        "parts": [{"kind": "text", "text": "hello from next door"}]}}}).encode(),
    headers={"Content-Type": "application/json", "Authorization": sys.argv[2]})
try:
    print(urllib.request.urlopen(request, timeout=3).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except OSError as exc:
    print("unreachable")
"""


def refused_total(controller: ControllerProcess) -> float:
    return parse(controller.client().request("GET", "/metrics", raw=True)).value(
        "wsctl_agent_a2a_refused_total")


def post(url: str, authorization: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    request = urllib.request.Request(url, data=json.dumps(message_send("hi")).encode(),
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_only_the_controller_reaches_an_agent(
        controller: ControllerProcess, fake_llm: FakeLLMThread, cleanup: list[str],
        docker_client: docker.DockerClient) -> None:
    cleanup.extend(["a2a-a", "a2a-b"])
    controller.apply(workspace("a2a-a", fake_llm.port), workspace("a2a-b", fake_llm.port))
    online(controller, "a2a-a")
    b: dict[str, Any] = online(controller, "a2a-b")
    b_container = docker_client.api.inspect_container(b["status"]["containerID"])
    b_address = next(iter(b_container["NetworkSettings"]["Networks"].values()))["IPAddress"]
    b_name = b_container["Name"].lstrip("/")
    before = refused_total(controller)

    # a local process, by B's address: no credential, a wrong one, another scheme
    for authorization in (None, "Bearer not-the-credential", "Basic x"):
        assert post(f"http://{b_address}:8000/", authorization) == 401
    # workspace A, by B's container name on the network they share
    done = wsctl(controller, "exec", "a2a-a", "--", "python3", "-c", PROBE,
                 f"http://{b_name}:8000/", "Bearer guessed")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == "unreachable"  # no path at all (ICC off)

    # the controller's path still works, and is logged
    code, out, err = controller.cli("send", "a2a-b", "through the front door")
    assert code == 0 and "fake-llm heard: through the front door" in out, err
    # three refusals, each counted once (carried by B's next heartbeats)
    wait_for(lambda: refused_total(controller) - before >= 3, 30, "refusals counted")
    assert refused_total(controller) - before == 3
