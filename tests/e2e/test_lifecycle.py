"""The lifecycle test (issue 3): real containers through provision, restart, failure
and recovery, driven through `wsctl` against a real `wsctl run` process."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from controller.core.a2a import message_send
from controller.testing.harness import (
    ControllerProcess,
    FakeLLMThread,
    condition,
    kill,
    new_dir,
    phase,
    post_json,
    wait_for,
)
from tests.e2e.conftest import INSTANCE, NETWORK, PLANTED_KEY
from tests.e2e.dockerutil import container_env, read_token, token_file_mode

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

TOKENS_SEEN: list[str] = []  # agent tokens read during the run: they must not leak either


def workspace(name: str, llm_port: int | None = None, *, api_key: bool = True,
              env: dict[str, str] | None = None, startup: int = 60,
              access: str | None = None) -> dict[str, Any]:
    llm: dict[str, Any] = {"provider": "minimax"}
    if access is not None:
        llm["access"] = access
    if llm_port is not None:
        llm["baseURL"] = f"http://host.docker.internal:{llm_port}/v1/"
    if api_key:
        llm["apiKey"] = {"secretRef": {"name": "e2e-llm", "key": "api-key"}}
    return {
        "apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {"model": "MiniMax-M3", "llm": llm, "startupTimeoutSeconds": startup,
                 "env": [{"name": k, "value": v} for k, v in (env or {}).items()]},
    }


def docker_time(value: str) -> datetime:
    """Docker's RFC 3339 with nanoseconds, to a datetime."""
    head, _, rest = value.partition(".")
    fraction = rest.rstrip("Z")[:6]
    return datetime.fromisoformat(f"{head}.{fraction or '0'}+00:00")


def online(controller: ControllerProcess, name: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (lambda o: o if phase(o) == "Online" else None)(
        controller.get(name)), timeout, f"{name} Online")


def managed(client: docker.DockerClient, name: str,
            instance: str = INSTANCE) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": [
        f"wsctl.dev/instance={instance}", f"wsctl.dev/workspace=default.{name}"]}))


@pytest.fixture
def side_controller(gateway: str, docker_client: docker.DockerClient,
                    log_files: list[Path]) -> Iterator[Callable[[str], ControllerProcess]]:
    """Controllers of their own (data dir, instance) for tests that stop or kill them."""
    made: list[ControllerProcess] = []

    def make(suffix: str) -> ControllerProcess:
        proc = ControllerProcess(data_dir=new_dir(f"wsctl-e2e-{suffix}-"), network=NETWORK,
                                 instance=f"{INSTANCE}-{suffix}", gateway=gateway,
                                 env={"WSCTL_SECRET_E2E_LLM_API_KEY": PLANTED_KEY})
        made.append(proc)
        return proc

    yield make
    for proc in made:
        log_files.extend(proc.log_files)  # their folders go after the secret scan
        proc.stop()
        for leftover in docker_client.containers.list(
                all=True, filters={"label": f"wsctl.dev/instance={proc.instance}"}):
            leftover.remove(force=True)


# 1 ------------------------------------------------------------------ provision


def test_provision_minimax_projects_env_without_v1(
        controller: ControllerProcess, fake_llm: FakeLLMThread,
        docker_client: docker.DockerClient, cleanup: list[str]) -> None:
    """access: direct (the documented trade-off): the key itself, the provider's URL
    with no trailing /v1. The default (gateway) is tests/e2e/test_llm_gateway_run.py.
    The agent calls the provider itself, so it needs a route: egress open (the
    provider here listens on the open network's gateway, a host address)."""
    cleanup.append("prov")
    open_gateway = docker_client.api.inspect_network(f"{NETWORK}-open")["IPAM"]["Config"][0][
        "Gateway"]
    provider = FakeLLMThread(open_gateway, PLANTED_KEY).start()
    try:
        obj = workspace("prov", access="direct")
        obj["spec"]["llm"]["baseURL"] = f"http://{open_gateway}:{provider.port}/v1/"
        obj["spec"]["egress"] = {"mode": "open"}
        controller.apply(obj)
        obj = online(controller, "prov")
        env = container_env(docker_client, obj["status"]["containerID"])
        assert env["MINIMAX_API_KEY"] == PLANTED_KEY
        assert env["ANTHROPIC_AUTH_TOKEN"] == PLANTED_KEY
        assert env["ANTHROPIC_BASE_URL"] == f"http://{open_gateway}:{provider.port}"
        code, out, err = controller.cli("send", "prov", "direct call")
        assert code == 0 and "fake-llm heard: direct call" in out, err
        assert provider.llm.requests[-1].key_ok
    finally:
        provider.stop()
    assert condition(obj, "Ready")["status"] == "True"
    assert condition(obj, "Degraded")["status"] == "False"
    code, out, _ = controller.cli("get")
    assert code == 0
    assert re.search(r"^prov\s+Online\s+True\s+-\s+0\s+OPEN\s+\d+s$", out, re.M), out
    code, out, _ = controller.cli("logs", "prov")
    assert code == 0 and "register_ok" in out
    code, out, _ = controller.cli("get", "prov", "-o", "json")
    shown = json.loads(out)
    assert shown["spec"]["llm"]["apiKey"] == {"secretRef": {"name": "e2e-llm", "key": "api-key"}}
    assert shown["status"]["phase"] == "Online"
    assert {c["type"] for c in shown["status"]["conditions"]} == {
        "Ready", "Degraded", "Progressing"}


def test_workspace_container_is_hardened(
        controller: ControllerProcess, fake_llm: FakeLLMThread,
        docker_client: docker.DockerClient, cleanup: list[str]) -> None:
    cleanup.append("hard")
    spec = workspace("hard", fake_llm.port)
    spec["spec"]["resources"] = {"memory": "256Mi", "cpus": "500m"}
    controller.apply(spec)
    info = docker_client.api.inspect_container(online(controller, "hard")["status"]["containerID"])
    host = info["HostConfig"]
    assert info["Config"]["User"] == "10001:10001"
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True
    assert "/tmp" in host["Tmpfs"]
    assert host["PidsLimit"] == 256
    assert host["Memory"] == 256 * 2**20 and host["NanoCpus"] == 500_000_000
    assert host["Privileged"] is False
    assert host["NetworkMode"] == NETWORK and host["PidMode"] == "" and host["IpcMode"] != "host"
    assert not host.get("Binds") and not host.get("Devices")
    # Only the workspace's own volumes: its token and its storage; never a host path.
    assert sorted((m["Type"], m["Destination"], m.get("RW")) for m in info["Mounts"]) == [
        ("volume", "/configs", True), ("volume", "/workspace", True)]
    assert not host.get("PortBindings")  # nothing published: the controller dials in
    mode, uid = token_file_mode(docker_client, info["Id"])
    assert (mode, uid) == (0o600, 10001)


# 2, 3 --------------------------------------------------------------- restart, send


def test_restart_keeps_env_rotates_token_never_degraded_then_send(
        controller: ControllerProcess, fake_llm: FakeLLMThread,
        docker_client: docker.DockerClient, cleanup: list[str]) -> None:
    cleanup.append("rst")
    controller.apply(workspace("rst", fake_llm.port))
    before = online(controller, "rst")
    old_id = before["status"]["containerID"]
    old_env = container_env(docker_client, old_id)
    old_token = read_token(docker_client, old_id)
    TOKENS_SEEN.append(old_token)

    code, out, err = controller.cli("restart", "rst")
    assert code == 0, err
    phases: list[str] = []

    def replaced() -> dict[str, Any] | None:
        obj = controller.get("rst")
        phases.append(phase(obj))
        status = obj.get("status") or {}
        done = status.get("containerID") not in (None, old_id) and phase(obj) == "Online"
        return obj if done else None

    after = wait_for(replaced, 60, "restarted container Online", interval=0.05)
    assert "Degraded" not in phases and "Failed" not in phases, phases
    assert after["status"]["restartCount"] == 1
    new_id = after["status"]["containerID"]
    new_env = container_env(docker_client, new_id)
    credential_vars = {"MINIMAX_API_KEY", "ANTHROPIC_AUTH_TOKEN"}  # gateway mode: minted
    assert {k: v for k, v in new_env.items() if k not in credential_vars} == \
        {k: v for k, v in old_env.items() if k not in credential_vars}
    assert new_env.keys() == old_env.keys()
    assert new_env["ANTHROPIC_AUTH_TOKEN"] != old_env["ANTHROPIC_AUTH_TOKEN"]
    TOKENS_SEEN.extend(old_env[k] for k in credential_vars)
    new_token = read_token(docker_client, new_id)
    TOKENS_SEEN.append(new_token)
    assert new_token != old_token
    events = controller.describe("rst")["events"]
    assert [e for e in events if e["type"] == "Warning"] == []

    status, body = post_json(f"{controller.registry}/registry/heartbeat",
                             {"workspace_id": "default.rst", "status": "healthy"}, old_token)
    assert (status, body["error"]["class"]) == (401, "stale_token")
    metrics = controller.client().request("GET", "/metrics", raw=True)
    assert re.search(r'^wsctl_recreates_total\{reason="RestartRequested"\} [1-9]', metrics, re.M)
    assert re.search(r'^wsctl_agent_auth_failures_total\{class="stale_token"\} [1-9]',
                     metrics, re.M)

    # 3: send after the restart goes through the proxy to the fake LLM and back.
    before_calls = len(fake_llm.llm.requests)
    code, out, err = controller.cli("send", "rst", "ping after restart")
    assert code == 0, err
    assert out.strip() == "fake-llm heard: ping after restart"
    calls = [s for s in fake_llm.llm.requests[before_calls:] if s.text == "ping after restart"]
    assert len(calls) == 1
    assert calls[0].path == "/v1/messages" and calls[0].status == 200
    assert calls[0].auth_scheme == "bearer" and calls[0].key_ok
    assert not any("/v1/v1" in s.path for s in fake_llm.llm.requests)

    def activity() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = controller.client().request(
            "GET", "/api/v1/workspaces/rst/activity")["items"]
        sources = {r["source"] for r in rows}
        return rows if {"user", "system:restart-context"} <= sources else None

    rows = wait_for(activity, 30, "user and restart-context activity rows")
    user_row = next(r for r in rows if r["source"] == "user")
    assert user_row["status"] == "ok" and user_row["method"] == "message/send"
    context = next(r for r in rows if r["source"] == "system:restart-context")
    assert context["source_id"] is None and context["source_kind"] == "system"


def test_token_with_expiration_is_refreshed_in_place_without_a_recreate(
        controller: ControllerProcess, fake_llm: FakeLLMThread,
        docker_client: docker.DockerClient, cleanup: list[str]) -> None:
    """spec.tokenExpirationSeconds: like a projected service-account token, the
    controller refreshes the token at half its lifetime inside the running
    container; the agent picks it up; nothing is recreated or degraded."""
    cleanup.append("ttl")
    manifest = workspace("ttl", fake_llm.port)
    manifest["spec"]["tokenExpirationSeconds"] = 10
    controller.apply(manifest)
    first = online(controller, "ttl")
    cid = first["status"]["containerID"]
    tokens = [read_token(docker_client, cid)]
    TOKENS_SEEN.append(tokens[0])
    phases: list[str] = []

    def refreshed() -> str | None:
        phases.append(phase(controller.get("ttl")))
        token = read_token(docker_client, cid)
        return token if token != tokens[-1] else None

    for _ in range(2):  # refreshed every ~5 s
        tokens.append(wait_for(refreshed, 30, "token file refreshed", interval=0.2))
        TOKENS_SEEN.append(tokens[-1])
    assert len(set(tokens)) == 3
    assert set(phases) == {"Online"}, phases
    now = controller.get("ttl")
    assert now["status"]["containerID"] == cid and now["status"]["restartCount"] == 0
    assert [e for e in controller.describe("ttl")["events"] if e["type"] == "Warning"] == []

    def reloaded_twice() -> str | None:  # the agent reads its file before each heartbeat
        text: str = docker_client.containers.get(cid).logs().decode()
        return text if text.count("event=token_reloaded reason=refreshed") >= 2 else None

    agent_log = wait_for(reloaded_twice, 10, "agent picked up both refreshed tokens")
    assert "unauthorized" not in agent_log  # picked up before the old token expired

    # The agent uses the refreshed token: a heartbeat with it is accepted, and the
    # first token, past its 10 s lifetime, is refused as expired (not as revoked).
    status, _ = post_json(f"{controller.registry}/registry/heartbeat",
                          {"workspace_id": "default.ttl", "status": "healthy"}, tokens[-1])
    assert status == 200

    def first_expired() -> dict[str, Any] | None:
        code, body = post_json(f"{controller.registry}/registry/heartbeat",
                               {"workspace_id": "default.ttl", "status": "healthy"}, tokens[0])
        return body if code == 401 else None

    body = wait_for(first_expired, 15, "first token expired", interval=0.5)
    assert body["error"]["class"] == "expired_token"
    metrics = controller.client().request("GET", "/metrics", raw=True)
    refreshes = re.search(r"^wsctl_token_refreshes_total (\d+)", metrics, re.M)
    assert refreshes is not None and int(refreshes.group(1)) >= 2
    code, out, err = controller.cli("send", "ttl", "still there?")
    assert code == 0, err
    assert out.strip() == "fake-llm heard: still there?"
    assert controller.get("ttl")["status"]["containerID"] == cid


# 4 ------------------------------------------------------------------ register failure


@pytest.mark.parametrize("payload, cls", [("private_url", "blocked_private_url"),
                                          ("no_url", "missing_url")])
def test_register_failure_degrades_then_healthy_heartbeat_clears(
        controller: ControllerProcess, fake_llm: FakeLLMThread, cleanup: list[str],
        payload: str, cls: str) -> None:
    name = f"reg-{payload.replace('_', '-')}"
    cleanup.append(name)
    controller.apply(workspace(name, fake_llm.port, env={
        "AGENT_REGISTER_PAYLOAD": payload, "AGENT_REGISTER_ONCE": "1",
        "AGENT_REJECT_GRACE_SECONDS": "4"}))
    degraded = wait_for(lambda: (lambda o: o if condition(o, "Degraded").get("reason")
                                 == "RegisterFailed" else None)(controller.get(name)),
                        30, f"{name} Degraded RegisterFailed", interval=0.05)
    assert phase(degraded) == "Degraded"
    assert cls in condition(degraded, "Degraded")["message"]
    code, out, _ = controller.cli("describe", name)
    assert code == 0
    assert re.search(r"Degraded\s+True\s+RegisterFailed", out), out
    assert f"class: {cls}" in out
    healed = online(controller, name, 30)
    assert healed["status"]["lastRegisterFailure"]["class"] == cls
    assert condition(healed, "Ready")["reason"] == "Heartbeating"


# 5 ------------------------------------------------------------------ slow boot


def test_slow_boot_is_progressing_not_degraded(
        controller: ControllerProcess, fake_llm: FakeLLMThread, cleanup: list[str]) -> None:
    cleanup.append("slow")
    controller.apply(workspace("slow", fake_llm.port, startup=60,
                               env={"AGENT_BOOT_DELAY_SECONDS": "4"}))
    samples: list[dict[str, Any]] = []

    def sample() -> dict[str, Any] | None:
        obj = controller.get("slow")
        samples.append(obj)
        return obj if phase(obj) == "Online" else None

    wait_for(sample, 60, "slow workspace Online", interval=0.2)
    waiting = [s for s in samples if condition(s, "Progressing").get("status") == "True"]
    assert waiting, "never saw Progressing=True while the agent booted"
    assert all(phase(s) in ("Pending", "Provisioning", "Online") for s in samples)
    assert all(condition(s, "Degraded").get("status") != "True" for s in samples)
    assert condition(waiting[-1], "Progressing")["reason"] == "WaitingForRegistration"


def test_boot_past_deadline_is_startup_timeout(
        controller: ControllerProcess, fake_llm: FakeLLMThread, cleanup: list[str]) -> None:
    """Past startupTimeoutSeconds the container is replaced once (StartupTimeout); when
    the replacement times out too, the workspace stays Degraded and backs off."""
    cleanup.append("late")
    controller.apply(workspace("late", fake_llm.port, startup=3,
                               env={"AGENT_BOOT_DELAY_SECONDS": "120"}))
    obj = wait_for(lambda: (lambda o: o if condition(o, "Degraded").get("reason")
                            == "StartupTimeout" else None)(controller.get("late")),
                   30, "Degraded StartupTimeout")
    assert phase(obj) == "Degraded"
    message = condition(obj, "Degraded")["message"]
    assert "3s" in message and "again after a StartupTimeout recreate" in message
    assert obj["status"]["lastRecreateReason"] == "StartupTimeout"
    assert obj["status"]["restartCount"] == 1  # once, then the back-off (10 s) holds
    time.sleep(3)
    held = controller.get("late")
    assert held["status"]["containerID"] == obj["status"]["containerID"]
    assert held["status"]["restartCount"] == 1 and phase(held) == "Degraded"
    events = controller.describe("late")["events"]
    assert [e["reason"] for e in events if e["reason"] == "Recreating"] == ["Recreating"]


# 6 ------------------------------------------------------------------ docker kill


def test_docker_kill_recreates_from_event_with_diagnostics(
        controller: ControllerProcess, fake_llm: FakeLLMThread,
        docker_client: docker.DockerClient, cleanup: list[str]) -> None:
    cleanup.append("kil")
    controller.apply(workspace("kil", fake_llm.port))
    old_id = online(controller, "kil")["status"]["containerID"]
    old_name = docker_client.api.inspect_container(old_id)["Name"].lstrip("/")
    killed_at = time.monotonic()
    docker_client.api.kill(old_id)

    def replaced() -> dict[str, Any] | None:
        obj = controller.get("kil")
        new = (obj.get("status") or {}).get("containerID")
        return obj if new not in (None, old_id) and phase(obj) == "Online" else None

    new_id = wait_for(replaced, 60, "replacement container Online")["status"]["containerID"]
    assert f"docker event die on {old_id[:12]}" in controller.log()
    # Resync is 300 s and the heartbeat-staleness timer fires 3 s after the last beat:
    # a replacement started well within that came from the Docker event.
    diagnostics = controller.describe("kil")["diagnostics"]
    died = docker_time(diagnostics["state"]["FinishedAt"])
    replaced_at = docker_time(docker_client.api.inspect_container(new_id)["State"]["StartedAt"])
    assert (replaced_at - died).total_seconds() < 2.5
    assert time.monotonic() - killed_at < 60
    assert diagnostics["container_id"] == old_id
    assert diagnostics["exit_code"] == 137
    assert diagnostics["reason"] == "ContainerExited"
    assert old_name in diagnostics["log_tail"]  # its own lines: it registered as itself
    assert diagnostics["env_names"]["MINIMAX_API_KEY"] == "set"


def test_a_container_printing_its_key_is_redacted_in_diagnostics_and_logs(
        controller: ControllerProcess, fake_llm: FakeLLMThread,
        docker_client: docker.DockerClient) -> None:
    """Issue 7: what the controller stores or serves of a container's output passes
    through redaction of the secret values it handed out."""
    manifest = workspace("leak", fake_llm.port)
    manifest["spec"]["env"].append({"name": "AGENT_ECHO", "valueFrom": {
        "secretRef": {"name": "e2e-llm", "key": "api-key"}}})
    controller.apply(manifest)
    old_id = online(controller, "leak")["status"]["containerID"]
    assert PLANTED_KEY in docker_client.containers.get(old_id).logs().decode()  # it leaked
    code, out, err = controller.cli("logs", "leak")
    assert code == 0, err
    assert "event=echo" in out and PLANTED_KEY not in out and "<redacted:" in out
    docker_client.api.kill(old_id)

    def diagnosed() -> dict[str, Any] | None:
        found = controller.describe("leak").get("diagnostics") or {}
        return found if found.get("container_id") == old_id else None

    diagnostics = wait_for(diagnosed, 60, "diagnostics of the killed container")
    assert "event=echo" in diagnostics["log_tail"]
    assert PLANTED_KEY not in json.dumps(diagnostics)
    assert "<redacted:" in diagnostics["log_tail"]
    # Gone before the final scan, which reads every container's own docker logs.
    controller.cli("delete", "leak")
    wait_for(lambda: not managed(docker_client, "leak"), 60, "leak's containers removed")


# 7 ------------------------------------------------------------------ spec change


def test_spec_change_recreates_once_and_leaves_others_alone(
        controller: ControllerProcess, fake_llm: FakeLLMThread, cleanup: list[str]) -> None:
    cleanup += ["chg-a", "chg-b"]
    controller.apply(workspace("chg-a", fake_llm.port), workspace("chg-b", fake_llm.port))
    a_before = online(controller, "chg-a")
    b_before = online(controller, "chg-b")
    controller.apply(workspace("chg-a", fake_llm.port, env={"LOG_LEVEL": "debug"}))

    def changed() -> dict[str, Any] | None:
        obj = controller.get("chg-a")
        status = obj.get("status") or {}
        return obj if status.get("containerID") != a_before["status"]["containerID"] \
            and phase(obj) == "Online" else None

    a_after = wait_for(changed, 60, "chg-a recreated and Online")
    assert a_after["status"]["restartCount"] == 1
    assert a_after["status"]["tokenGeneration"] == a_before["status"]["tokenGeneration"] + 1
    assert a_after["status"]["lastRecreateReason"] == "ConfigChanged"
    recreates = [e for e in controller.describe("chg-a")["events"] if e["reason"] == "Recreating"]
    assert len(recreates) == 1 and recreates[0]["count"] == 1
    b_after = controller.get("chg-b")
    assert b_after["status"]["containerID"] == b_before["status"]["containerID"]
    assert b_after["status"]["restartCount"] == 0
    assert b_after["metadata"]["generation"] == b_before["metadata"]["generation"]


# 8 ------------------------------------------------------------------ crash mid-recreate


@pytest.mark.parametrize("stall_after", ["CreateContainer", "WriteToken", "ActivateToken",
                                         "StopContainer", "RemoveContainer"])
def test_sigkill_during_recreate_converges(
        agent_image: str, fake_llm: FakeLLMThread, docker_client: docker.DockerClient,
        side_controller: Callable[[str], ControllerProcess], stall_after: str) -> None:
    proc = side_controller("crash")
    instance = proc.instance
    proc.start()
    proc.apply(workspace("crash", fake_llm.port))
    first = online(proc, "crash")
    proc.stop()
    proc.start({"WSCTL_DEBUG_STALL_AFTER_OP": stall_after})
    assert proc.cli("restart", "crash")[0] == 0
    wait_for(lambda: f"stalling after {stall_after}" in proc.log(), 30,
             f"controller to reach {stall_after}")
    kill(proc)
    proc.start()
    final = wait_for(lambda: (lambda o: o if phase(o) == "Online" and o["status"][
        "containerID"] != first["status"]["containerID"] else None)(proc.get("crash")),
        60, "crash workspace Online again after the SIGKILL")
    containers = wait_for(lambda: (lambda cs: cs if len(cs) == 1 else None)(
        managed(docker_client, "crash", instance)), 30, "exactly one container")
    assert containers[0].id == final["status"]["containerID"]
    assert containers[0].status == "running"
    everything = docker_client.containers.list(
        all=True, filters={"label": f"wsctl.dev/instance={instance}"})
    assert [c.id for c in everything] == [containers[0].id]
    assert proc.cli("delete", "crash")[0] == 0
    wait_for(lambda: not managed(docker_client, "crash", instance), 30, "container removed")


# adoption and orphans ---------------------------------------------------------------


def test_restart_adopts_running_containers_and_removes_orphans(
        agent_image: str, fake_llm: FakeLLMThread, docker_client: docker.DockerClient,
        side_controller: Callable[[str], ControllerProcess]) -> None:
    proc = side_controller("adopt")
    instance = proc.instance
    proc.start()
    proc.apply(workspace("keep", fake_llm.port))
    kept = online(proc, "keep")
    proc.stop()
    orphan = docker_client.api.create_container(
        agent_image, name=f"wsctl-{instance}-default.ghost-g1", labels={
            "wsctl.dev/managed-by": "wsctl", "wsctl.dev/instance": instance,
            "wsctl.dev/workspace": "default.ghost"})
    proc.start()
    wait_for(lambda: not managed(docker_client, "ghost", instance), 30, "orphan removed")
    assert not any(c.id == orphan["Id"] for c in docker_client.containers.list(all=True))
    after = online(proc, "keep")
    assert after["status"]["containerID"] == kept["status"]["containerID"]
    assert after["status"]["restartCount"] == 0
    assert len(managed(docker_client, "keep", instance)) == 1
    assert "removing orphan container" in proc.log()


# 9 ------------------------------------------------------------------ missing key


def test_missing_llm_key_is_agent_unhealthy_naming_the_variable(
        controller: ControllerProcess, fake_llm: FakeLLMThread, cleanup: list[str]) -> None:
    cleanup.append("nokey")
    controller.apply(workspace("nokey", fake_llm.port, api_key=False))
    obj = wait_for(lambda: (lambda o: o if condition(o, "Degraded").get("reason")
                            == "AgentUnhealthy" else None)(controller.get("nokey")),
                   30, "Degraded AgentUnhealthy")
    assert "ANTHROPIC_AUTH_TOKEN" in condition(obj, "Degraded")["message"]
    assert phase(obj) == "Degraded"


def test_delete_removes_container(controller: ControllerProcess, fake_llm: FakeLLMThread,
                                  docker_client: docker.DockerClient) -> None:
    controller.apply(workspace("gone", fake_llm.port))
    online(controller, "gone")
    assert managed(docker_client, "gone")
    code, _, err = controller.cli("delete", "gone")
    assert code == 0, err
    wait_for(lambda: not managed(docker_client, "gone"), 30, "container removed")
    # the row goes after the container (the purge is the deletion's last step): a
    # moment later, not necessarily by the time Docker has removed the container
    wait_for(lambda: controller.cli("get", "gone")[0] == 1, 30, "workspace purged")
    code, _, err = controller.cli("get", "gone")
    assert code == 1 and "not found" in err


# last ------------------------------------------------------------------ no secret leaks


def test_no_secret_in_any_log_status_event_or_diagnostics(
        controller: ControllerProcess, docker_client: docker.DockerClient,
        fake_llm: FakeLLMThread, log_files: list[Path]) -> None:
    """Runs on its own too: it makes its own workspace, reads its token, and has the
    (untrusted) agent echo the LLM key and that token back through A2A; then no
    output of the controller may hold any secret value, A2A answers and activity
    rows included. Tokens other tests read are scanned for as well."""
    controller.apply(workspace("scan", fake_llm.port))
    scanned = online(controller, "scan")
    token = read_token(docker_client, scanned["status"]["containerID"])
    admin_token = (controller.data_dir / "admin.token").read_text().strip()
    secrets = [PLANTED_KEY, token, admin_token, *TOKENS_SEEN]
    outputs: dict[str, str] = {}
    leak = f"please repeat {PLANTED_KEY} and {token}"
    code, out, err = controller.cli("send", "scan", leak)
    assert code == 0, err
    assert "fake-llm heard: please repeat <redacted:" in out  # the agent did echo them
    outputs["cli send"] = out + err
    outputs["a2a answer"] = json.dumps(controller.client().request(
        "POST", "/api/v1/workspaces/scan/a2a", message_send(leak)))
    for path in log_files:
        outputs[str(path)] = path.read_text(errors="replace")
    items = controller.client().request("GET", "/api/v1/workspaces")["items"]
    for item in items:
        name = item["metadata"]["name"]
        outputs[f"describe {name}"] = json.dumps(controller.describe(name))
        outputs[f"activity {name}"] = json.dumps(controller.client().request(
            "GET", f"/api/v1/workspaces/{name}/activity"))
        outputs[f"cli describe {name}"] = controller.cli("describe", name)[1]
    for container in docker_client.containers.list(
            all=True, filters={"label": f"wsctl.dev/instance={INSTANCE}"}):
        outputs[f"docker logs {container.name}"] = container.logs().decode(errors="replace")
    assert len(outputs) > 3 and "activity scan" in outputs
    assert outputs["activity scan"].count("<redacted:") >= 4  # request and answer, twice
    leaks = [(where, s[:12]) for where, text in outputs.items() for s in secrets if s in text]
    assert leaks == []

