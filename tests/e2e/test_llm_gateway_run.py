"""The LLM gateway (issue 15) end to end: a real `wsctl run`, real agent containers, and
a fake provider on the workspace network's gateway address that checks the real key
and the exact path. The official `anthropic` SDK is a client too, configured with
exactly the environment wsctl gave the container (only `host.docker.internal`, which
the container's /etc/hosts maps to the network's gateway address, is written as that
address, since the test runs on the host).

The provider key lives in the controller's store (`wsctl secret set`), never in the
container: the seed scenario (provider minimax, baseURL with a trailing `/v1/`) must
reach the provider at `/anthropic/v1/messages` with the minimax key, also after a
restart, and a new key must take effect on the next call with no new container.
"""

from __future__ import annotations

import io
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import docker
import pytest

from controller.app.cli import main
from controller.testing.harness import ControllerProcess, FakeLLMThread, condition, phase, wait_for
from tests.e2e.conftest import PLANTED_KEY
from tests.e2e.dockerutil import container_env

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

KEY_ONE = "mm-e2e-GATEWAY-ONE-" + secrets.token_hex(12)
KEY_TWO = "mm-e2e-GATEWAY-TWO-" + secrets.token_hex(12)
SECRET = ("gw-llm", "api-key")


@pytest.fixture(scope="module")
def upstream(gateway: str) -> Iterator[FakeLLMThread]:
    """MiniMax's Anthropic-compatible API lives under /anthropic: a doubled or missing
    /v1, or the wrong key, is a 404 or 401 here as it is there."""
    server = FakeLLMThread(gateway, KEY_ONE, prefix="/anthropic").start()
    yield server
    server.stop()


def set_secret(controller: ControllerProcess, value: str, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> None:
    """`wsctl secret set` as a user runs it beside the controller (same data dir)."""
    monkeypatch.setattr("sys.stdin", io.StringIO(value + "\n"))
    code = main(["secret", "set", *SECRET, "--data-dir", str(controller.data_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert value not in out + err


def manifest(name: str, port: int, **llm: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace", "metadata": {"name": name},
        "spec": {"model": "MiniMax-M3", "llm": {
            "provider": "minimax",
            "baseURL": f"http://host.docker.internal:{port}/anthropic/v1/",  # the seed's
            "apiKey": {"secretRef": {"name": SECRET[0], "key": SECRET[1]}}, **llm}},
    }


def online(controller: ControllerProcess, name: str, not_container: str | None = None
           ) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = controller.get(name)
        cid = (obj.get("status") or {}).get("containerID")
        return obj if phase(obj) == "Online" and cid not in (None, not_container) else None
    return wait_for(ready, 90, f"{name} Online")


def sdk(controller: ControllerProcess, env: dict[str, str]) -> anthropic.Anthropic:
    """The SDK as the agent's own environment configures it."""
    base = env["ANTHROPIC_BASE_URL"].replace("host.docker.internal", controller.gateway)
    return anthropic.Anthropic(base_url=base, auth_token=env["ANTHROPIC_AUTH_TOKEN"],
                               api_key=None, max_retries=0, timeout=20.0)


def send(controller: ControllerProcess, name: str, text: str) -> tuple[int, str]:
    code, out, err = controller.cli("send", name, text)
    return code, out + err


def test_the_key_stays_in_the_controller_through_restart_and_rotation(
        controller: ControllerProcess, upstream: FakeLLMThread, cleanup: list[str],
        docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    set_secret(controller, KEY_ONE, monkeypatch, capsys)
    cleanup.append("gw")
    controller.apply(manifest("gw", upstream.port))
    first = online(controller, "gw")["status"]["containerID"]
    env = container_env(docker_client, first)

    # 1. docker inspect: no provider key anywhere; the gateway and a credential instead
    assert not [n for n, v in env.items() if KEY_ONE in v or PLANTED_KEY in v]
    assert env["ANTHROPIC_BASE_URL"] == \
        f"http://host.docker.internal:{controller.registry_port}/llm/minimax"
    credential = env["ANTHROPIC_AUTH_TOKEN"]
    assert env["MINIMAX_API_KEY"] == credential and len(credential) == 43

    # 2. the agent's own call goes through the gateway: one /v1, the real key, as Bearer
    code, out = send(controller, "gw", "hello gateway")
    assert code == 0 and "fake-llm heard: hello gateway" in out, out
    seen = upstream.llm.requests[-1]
    assert (seen.path, seen.auth_scheme, seen.key_ok) == ("/anthropic/v1/messages", "bearer",
                                                          True)

    # 3. the official SDK with that environment: a plain call and a stream whose events
    #    arrive while the provider is still writing it
    client = sdk(controller, env)
    message = client.messages.create(model="MiniMax-M3", max_tokens=64,
                                     messages=[{"role": "user", "content": "plain call"}])
    assert message.content[0].type == "text"
    assert message.content[0].text == "fake-llm heard: plain call"
    assert (message.usage.input_tokens, message.usage.output_tokens) == \
        upstream.llm.requests[-1].usage
    upstream.llm.stream_pause = 0.3
    try:
        began = time.monotonic()
        arrivals: list[float] = []
        with client.messages.stream(model="MiniMax-M3", max_tokens=64, messages=[
                {"role": "user", "content": "a streamed call"}]) as stream:
            for text in stream.text_stream:
                arrivals.append(time.monotonic() - began)
                assert text
            final = stream.get_final_message()
    finally:
        upstream.llm.stream_pause = 0.0
    total = time.monotonic() - began
    assert "".join(b.text for b in final.content if b.type == "text") == \
        "fake-llm heard: a streamed call"
    assert upstream.llm.requests[-1].streamed
    assert (final.usage.input_tokens, final.usage.output_tokens) == \
        upstream.llm.requests[-1].usage
    # 11 events 0.3 s apart: the first words arrive long before the provider finishes
    assert total >= 2.7 and arrivals[0] < total - 1.5, (arrivals, total)

    # 4. usage: the store's totals are what the provider reported, call by call
    code, out, err = controller.cli("usage", "gw", "-o", "json")
    assert code == 0, err
    (row,) = json.loads(out)["items"]
    answered = [s for s in upstream.llm.requests if s.status == 200 and s.key_ok]
    mine = answered[-3:]  # this workspace's three calls (the upstream is this module's)
    assert (row["requests"], row["errors"]) == (3, 0)
    assert row["inputTokens"] == sum(s.usage[0] for s in mine)
    assert row["outputTokens"] == sum(s.usage[1] for s in mine)

    # 5. restart: a new container and credential; the old one is refused with 401
    code, _, err = controller.cli("restart", "gw")
    assert code == 0, err
    second = online(controller, "gw", not_container=first)["status"]["containerID"]
    new_env = container_env(docker_client, second)
    assert new_env["ANTHROPIC_AUTH_TOKEN"] != credential
    with pytest.raises(anthropic.AuthenticationError) as refused:
        client.messages.create(model="MiniMax-M3", max_tokens=8,
                               messages=[{"role": "user", "content": "stale"}])
    assert refused.value.status_code == 401
    assert upstream.llm.requests[-1].text != "stale"  # it never reached the provider
    # the seed scenario: the restarted agent reaches /anthropic/v1/messages, minimax key
    code, out = send(controller, "gw", "after restart")
    assert code == 0 and "fake-llm heard: after restart" in out, out
    seen = upstream.llm.requests[-1]
    assert (seen.path, seen.key_ok, seen.text) == ("/anthropic/v1/messages", True,
                                                   "after restart")

    # 6. a new key takes effect on the next call, in the same container
    upstream.llm.api_key = KEY_TWO  # the provider now accepts only the new key
    code, out = send(controller, "gw", "old key")
    assert code != 0 and "401" in out  # the gateway still sends the old one
    set_secret(controller, KEY_TWO, monkeypatch, capsys)
    code, out = send(controller, "gw", "new key")
    assert code == 0 and "fake-llm heard: new key" in out, out
    assert upstream.llm.requests[-1].key_ok
    assert controller.get("gw")["status"]["containerID"] == second
    assert [c.id for c in docker_client.containers.list(filters={"label": [
        "wsctl.dev/workspace=default.gw"]})] == [second]
    assert not [n for n, v in container_env(docker_client, second).items()
                if KEY_ONE in v or KEY_TWO in v]
    upstream.llm.api_key = KEY_ONE


def degraded_reason(controller: ControllerProcess, name: str) -> str:
    obj = controller.get(name)
    found = condition(obj, "Degraded")
    return str(found.get("reason")) if found.get("status") == "True" else ""


def test_a_spent_budget_refuses_calls_and_degrades_until_raised(
        controller: ControllerProcess, upstream: FakeLLMThread, cleanup: list[str],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    set_secret(controller, KEY_ONE, monkeypatch, capsys)
    cleanup.append("bud")
    controller.apply(manifest("bud", upstream.port, budget={"tokensPerDay": 20}))
    online(controller, "bud")
    # 5 words in, 7 out: 12 of 20
    code, out = send(controller, "bud", "one two three four five")
    assert code == 0, out
    assert degraded_reason(controller, "bud") == ""
    # 12 + 4 in + 6 out = 22: answered (it could not be known before the answer) ...
    code, out = send(controller, "bud", "six seven eight nine")
    assert code == 0, out
    wait_for(lambda: degraded_reason(controller, "bud") == "BudgetExhausted", 30,
             "Degraded BudgetExhausted")
    message = condition(controller.get("bud"), "Degraded")["message"]
    assert "20 tokens" in message and "00:00 UTC" in message
    # ... and the next call is refused in the provider's own error shape
    before = len(upstream.llm.requests)
    code, out = send(controller, "bud", "over budget")
    assert code != 0 and "429" in out and "rate_limit_error" in out, out
    assert len(upstream.llm.requests) == before  # never forwarded
    code, out, err = controller.cli("usage", "bud", "-o", "json")
    assert code == 0, err
    (row,) = json.loads(out)["items"]
    assert (row["requests"], row["inputTokens"] + row["outputTokens"]) == (3, 22)
    assert row["errors"] == 1
    # a budget raise clears the condition and the calls go through again
    controller.apply(manifest("bud", upstream.port, budget={"tokensPerDay": 1000}))
    wait_for(lambda: degraded_reason(controller, "bud") == "", 30, "Degraded cleared")
    code, out = send(controller, "bud", "raised")
    assert code == 0 and "fake-llm heard: raised" in out, out


def test_the_gateway_is_not_on_the_admin_listener(controller: ControllerProcess,
                                                 upstream: FakeLLMThread) -> None:
    """Only the registry listener (the address containers reach) serves /llm/."""
    admin_token = (controller.data_dir / "admin.token").read_text().strip()
    before = len(upstream.llm.requests)
    request = urllib.request.Request(
        f"http://{controller.server}/llm/minimax/v1/messages", method="POST",
        data=b'{"model":"m","max_tokens":1,"messages":[]}',
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json",
                 "anthropic-version": "2023-06-01"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 404
    assert len(upstream.llm.requests) == before
