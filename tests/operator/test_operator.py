"""The kopf operator in-process against the Kubernetes API emulator, driving real
Docker containers (issue 4). Each test names its own workspaces."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import docker
import pytest

from controller.api.metrics import CONTENT_TYPE
from controller.testing.harness import FakeLLMThread
from tests.exposition import Exposition, never_decreased, parse
from tests.operator.conftest import INSTANCE, NAMESPACE
from tests.operator.harness import (
    WORKSPACES,
    OperatorThread,
    call,
    condition,
    container_env,
    free_port,
    new_dir,
    phase,
    post_json,
    remove_dir,
    secret,
    wait_for,
    workspace,
)
from tests.operator.kube import ApiError, KubeClient

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.operator]

# The operator resyncs every 30 s: a reaction within this bound came from an event.
EVENT_DRIVEN = 10.0
KEY_1 = "sk-op-test-key-one"
KEY_2 = "sk-op-test-key-two"


def managed(client: docker.DockerClient, name: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": [
        f"wsctl.dev/instance={INSTANCE}", f"wsctl.dev/workspace={NAMESPACE}.{name}"]}))


def get(kubectl: KubeClient, name: str) -> dict[str, Any]:
    return kubectl.get(WORKSPACES, "workspaces", NAMESPACE, name)


def ready(kubectl: KubeClient, name: str, timeout: float = 60,
          where: str = "") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(kubectl, name)
        return obj if condition(obj, "Ready").get("status") == "True" else None
    return wait_for(check, timeout, f"{name} Ready {where}".strip(), interval=0.1)


@pytest.fixture
def cleanup(kubectl: KubeClient, docker_client: docker.DockerClient
            ) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(ApiError):
            kubectl.delete(WORKSPACES, "workspaces", NAMESPACE, name)
    wait_for(lambda: all(kubectl.find(WORKSPACES, "workspaces", NAMESPACE, n) is None
                         for n in names), 30, f"{names} deleted")


def ensure_secret(kubectl: KubeClient, name: str, value: str) -> None:
    body = secret(name, {"api-key": value})
    if kubectl.find("v1", "secrets", NAMESPACE, name) is None:
        kubectl.create("v1", "secrets", NAMESPACE, body)
    else:
        kubectl.patch("v1", "secrets", NAMESPACE, name, {"data": body["data"]})


def test_apply_creates_container_and_status_ready(
        operator: OperatorThread, kubectl: KubeClient, docker_client: docker.DockerClient,
        cleanup: list[str]) -> None:
    ensure_secret(kubectl, "llm", KEY_1)
    cleanup.append("alpha")
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE, workspace("alpha"))
    obj = ready(kubectl, "alpha")
    status = obj["status"]
    assert phase(obj) == "Online"
    assert status["observedGeneration"] == obj["metadata"]["generation"] == 1
    assert condition(obj, "Degraded")["status"] == "False"
    assert condition(obj, "Progressing")["status"] == "False"
    containers = managed(docker_client, "alpha")
    assert [c.id for c in containers] == [status["containerID"]]
    env = container_env(docker_client, status["containerID"])
    # gateway mode, the default: a credential of its own, the key stays in the Secret
    assert env["MINIMAX_API_KEY"] == env["ANTHROPIC_AUTH_TOKEN"] != KEY_1
    assert not [name for name, value in env.items() if KEY_1 in value]
    assert env["ANTHROPIC_BASE_URL"].endswith(f":{operator.registry_port}/llm/minimax")
    assert "wsctl.dev/finalizer" in obj["metadata"]["finalizers"]
    assert set(obj["status"]) <= {"phase", "observedGeneration", "containerID", "configHash",
                                  "tokenGeneration", "restartCount", "lastRegisterFailure",
                                  "lastRecreateReason", "restartContextGeneration",
                                  "conditions"}


def events(kubectl: KubeClient, name: str) -> list[dict[str, Any]]:
    return list(kubectl.events_for(NAMESPACE, name))


def has_event(kubectl: KubeClient, name: str, reason: str,
              text: str = "") -> dict[str, Any] | None:
    return next((e for e in events(kubectl, name)
                 if e.get("reason") == reason and text in e.get("message", "")), None)


def replaced(kubectl: KubeClient, name: str, old_id: str,
             timeout: float = EVENT_DRIVEN) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(kubectl, name)
        status = obj.get("status") or {}
        fresh = status.get("containerID") not in (None, old_id)
        return obj if fresh and condition(obj, "Ready").get("status") == "True" else None
    return wait_for(check, timeout, f"{name} recreated and Ready", interval=0.1)


def test_spec_change_recreates_once_and_advances_observed_generation(
        operator: OperatorThread, kubectl: KubeClient, docker_client: docker.DockerClient,
        cleanup: list[str]) -> None:
    ensure_secret(kubectl, "llm", KEY_1)
    cleanup.append("bravo")
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE, workspace("bravo"))
    before = ready(kubectl, "bravo")
    old_id = before["status"]["containerID"]
    kubectl.patch(WORKSPACES, "workspaces", NAMESPACE, "bravo",
                  {"spec": {"env": [{"name": "LOG_LEVEL", "value": "debug"}]}})
    after = replaced(kubectl, "bravo", old_id)
    wait_for(lambda: get(kubectl, "bravo")["status"]["observedGeneration"] == 2, 10,
             "observedGeneration 2")
    after = get(kubectl, "bravo")
    status = after["status"]
    assert after["metadata"]["generation"] == 2
    assert condition(after, "Ready")["observedGeneration"] == 2
    assert status["restartCount"] == 1 and status["tokenGeneration"] == 2
    assert status["lastRecreateReason"] == "ConfigChanged"
    assert [c.id for c in managed(docker_client, "bravo")] == [status["containerID"]]
    assert container_env(docker_client, status["containerID"])["LOG_LEVEL"] == "debug"
    recreating = [e for e in events(kubectl, "bravo") if e.get("reason") == "Recreating"]
    assert len(recreating) == 1 and "ConfigChanged" in recreating[0]["message"]
    assert recreating[0]["involvedObject"]["uid"] == after["metadata"]["uid"]


def test_secret_value_change_recreates_with_new_projected_key(
        operator: OperatorThread, kubectl: KubeClient, docker_client: docker.DockerClient,
        cleanup: list[str]) -> None:
    """access: direct: the key is in the container, so a new key needs a new one. The
    agent calls its provider itself, so it needs a route (egress open)."""
    ensure_secret(kubectl, "llm-rotating", KEY_1)
    cleanup.append("charlie")
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE,
                   workspace("charlie", secret_name="llm-rotating", llm={"access": "direct"},
                             egress={"mode": "open"}))
    before = ready(kubectl, "charlie")
    old_id = before["status"]["containerID"]
    assert container_env(docker_client, old_id)["MINIMAX_API_KEY"] == KEY_1
    ensure_secret(kubectl, "llm-rotating", KEY_2)
    after = replaced(kubectl, "charlie", old_id)
    env = container_env(docker_client, after["status"]["containerID"])
    assert env["MINIMAX_API_KEY"] == KEY_2 == env["ANTHROPIC_AUTH_TOKEN"]
    assert after["status"]["restartCount"] == 1
    assert after["metadata"]["generation"] == 1  # the Workspace itself did not change
    assert len(managed(docker_client, "charlie")) == 1
    shown = str(after) + str(events(kubectl, "charlie"))
    assert KEY_1 not in shown and KEY_2 not in shown


@pytest.fixture(scope="module")
def upstream(gateway: str) -> Iterator[FakeLLMThread]:
    server = FakeLLMThread(gateway, KEY_1, prefix="/anthropic").start()
    yield server
    server.stop()


def test_gateway_mode_key_stays_in_the_secret_and_a_new_one_needs_no_recreate(
        operator: OperatorThread, kubectl: KubeClient, docker_client: docker.DockerClient,
        upstream: FakeLLMThread, cleanup: list[str]) -> None:
    """The default (gateway): the container has a credential, the Kubernetes Secret the
    key; the operator's gateway reads it at each call, so a changed Secret is used by
    the next call, in the same container."""
    ensure_secret(kubectl, "llm-gw", KEY_1)
    cleanup.append("gwop")
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE, workspace(
        "gwop", secret_name="llm-gw",
        llm={"baseURL": f"http://host.docker.internal:{upstream.port}/anthropic/v1/"}))
    cid = ready(kubectl, "gwop")["status"]["containerID"]
    env = container_env(docker_client, cid)
    assert not [n for n, v in env.items() if KEY_1 in v]
    assert env["ANTHROPIC_BASE_URL"] == \
        f"http://host.docker.internal:{operator.registry_port}/llm/minimax"
    client = anthropic.Anthropic(base_url=f"{operator.registry}/llm/minimax",
                                 auth_token=env["ANTHROPIC_AUTH_TOKEN"], max_retries=0,
                                 timeout=20.0)

    def ask(text: str) -> str:
        answer = client.messages.create(model="MiniMax-M3", max_tokens=32,
                                        messages=[{"role": "user", "content": text}])
        return "".join(b.text for b in answer.content if b.type == "text")

    assert ask("first") == "fake-llm heard: first"
    assert (upstream.llm.requests[-1].path, upstream.llm.requests[-1].key_ok) == \
        ("/anthropic/v1/messages", True)
    upstream.llm.api_key = KEY_2
    try:
        ensure_secret(kubectl, "llm-gw", KEY_2)

        def rotated() -> bool:
            try:
                return ask("second") == "fake-llm heard: second"
            except anthropic.AuthenticationError:  # the watch has not seen the Secret yet
                return False
        wait_for(rotated, EVENT_DRIVEN, "the new key used")
    finally:
        upstream.llm.api_key = KEY_1
    time.sleep(1)  # a recreate, had the Secret change caused one, starts within this
    obj = get(kubectl, "gwop")
    assert obj["status"]["containerID"] == cid and obj["status"].get("restartCount", 0) == 0
    assert [c.id for c in managed(docker_client, "gwop")] == [cid]


def test_missing_secret_is_failed_naming_the_field_then_recovers(
        operator: OperatorThread, kubectl: KubeClient, docker_client: docker.DockerClient,
        cleanup: list[str]) -> None:
    cleanup.append("delta")
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE,
                   workspace("delta", secret_name="llm-later"))
    failed = wait_for(lambda: (lambda o: o if condition(o, "Degraded").get("status") == "True"
                               else None)(get(kubectl, "delta")), 30, "delta Degraded")
    assert phase(failed) == "Failed"
    assert "spec.llm.apiKey.secretRef" in condition(failed, "Degraded")["message"]
    assert managed(docker_client, "delta") == []
    ensure_secret(kubectl, "llm-later", KEY_1)
    ready(kubectl, "delta", where="after the Secret appeared")


def test_restarted_at_annotation_forces_one_recreate(
        operator: OperatorThread, kubectl: KubeClient, docker_client: docker.DockerClient,
        cleanup: list[str]) -> None:
    ensure_secret(kubectl, "llm", KEY_1)
    cleanup.append("echo")
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE, workspace("echo"))
    old_id = ready(kubectl, "echo")["status"]["containerID"]
    kubectl.patch(WORKSPACES, "workspaces", NAMESPACE, "echo", {"metadata": {"annotations": {
        "wsctl.dev/restartedAt": "2030-01-01T00:00:00Z"}}})
    after = replaced(kubectl, "echo", old_id)
    assert after["status"]["lastRecreateReason"] == "RestartRequested"
    assert after["status"]["restartCount"] == 1
    assert after["metadata"]["generation"] == 1
    assert [c.id for c in managed(docker_client, "echo")] == [after["status"]["containerID"]]


def test_docker_kill_is_replaced_from_the_event(
        operator: OperatorThread, kubectl: KubeClient, docker_client: docker.DockerClient,
        cleanup: list[str]) -> None:
    ensure_secret(kubectl, "llm", KEY_1)
    cleanup.append("juliet")
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE, workspace("juliet"))
    old_id = ready(kubectl, "juliet")["status"]["containerID"]
    docker_client.api.kill(old_id)
    after = replaced(kubectl, "juliet", old_id)
    assert after["status"]["lastRecreateReason"] == "ContainerExited"
    assert [c.id for c in managed(docker_client, "juliet")] == [after["status"]["containerID"]]


def test_delete_runs_finalizer_removing_container_and_tokens(
        operator: OperatorThread, kubectl: KubeClient,
        docker_client: docker.DockerClient) -> None:
    ensure_secret(kubectl, "llm", KEY_1)
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE, workspace("foxtrot"))
    obj = ready(kubectl, "foxtrot")
    assert "wsctl.dev/finalizer" in obj["metadata"]["finalizers"]
    assert len(managed(docker_client, "foxtrot")) == 1
    store = operator.controller.store if operator.controller else None
    assert store is not None
    assert call(operator, store.live_token(f"{NAMESPACE}.foxtrot")) is not None
    kubectl.delete(WORKSPACES, "workspaces", NAMESPACE, "foxtrot")
    wait_for(lambda: kubectl.find(WORKSPACES, "workspaces", NAMESPACE, "foxtrot") is None,
             30, "foxtrot gone")
    assert managed(docker_client, "foxtrot") == []
    assert call(operator, store.live_token(f"{NAMESPACE}.foxtrot")) is None
    assert call(operator, store.get_registration(f"{NAMESPACE}.foxtrot")) is None
    assert has_event(kubectl, "foxtrot", "Deleting")


def test_delete_during_a_reconcile_is_not_held_back_by_the_worker(
        operator: OperatorThread, kubectl: KubeClient, docker_client: docker.DockerClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A delete that lands while the workspace's worker is mid-reconcile (here: a pass
    made 3 s slow, which changes nothing) waits for that pass, not for kopf's default
    60 s re-check of a busy worker: seen as a teardown that timed out under load."""
    ensure_secret(kubectl, "llm", KEY_1)
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE, workspace("oscar"))
    ready(kubectl, "oscar")
    assert operator.controller is not None and operator.controller.operator is not None
    reconciler = operator.controller.operator.reconciler
    real = reconciler.reconcile
    slowed = threading.Event()

    async def slow_once(ws: Any, previous: Any) -> Any:
        if ws.metadata.name == "oscar" and not slowed.is_set():
            slowed.set()
            await asyncio.sleep(3)
        return await real(ws, previous)

    monkeypatch.setattr(reconciler, "reconcile", slow_once)
    kubectl.patch(WORKSPACES, "workspaces", NAMESPACE, "oscar",
                  {"metadata": {"labels": {"touched": "yes"}}})
    assert slowed.wait(EVENT_DRIVEN), "the touch woke oscar's worker"
    started = time.monotonic()
    kubectl.delete(WORKSPACES, "workspaces", NAMESPACE, "oscar")
    wait_for(lambda: kubectl.find(WORKSPACES, "workspaces", NAMESPACE, "oscar") is None,
             90, "oscar gone")
    took = time.monotonic() - started
    assert took < 15, f"the delete took {took:.1f}s"
    assert managed(docker_client, "oscar") == []


def test_register_failure_is_degraded_with_event_naming_the_class(
        operator: OperatorThread, kubectl: KubeClient, cleanup: list[str]) -> None:
    ensure_secret(kubectl, "llm", KEY_1)
    cleanup.append("golf")
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE, workspace("golf", env={
        "AGENT_REGISTER_PAYLOAD": "private_url", "AGENT_REGISTER_ONCE": "1",
        "AGENT_REJECT_GRACE_SECONDS": "4"}))
    degraded = wait_for(lambda: (lambda o: o if condition(o, "Degraded").get("reason")
                                 == "RegisterFailed" else None)(get(kubectl, "golf")),
                        30, "golf Degraded RegisterFailed", interval=0.05)
    assert phase(degraded) == "Degraded"
    assert "blocked_private_url" in condition(degraded, "Degraded")["message"]
    assert degraded["status"]["lastRegisterFailure"]["class"] == "blocked_private_url"
    event = wait_for(lambda: has_event(kubectl, "golf", "RegisterFailed",
                                       "blocked_private_url"), 10, "RegisterFailed event")
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "Workspace"
    healed = ready(kubectl, "golf", 30, "after a healthy heartbeat")
    assert healed["status"]["lastRegisterFailure"]["class"] == "blocked_private_url"
    wait_for(lambda: has_event(kubectl, "golf", "Recovered"), 10, "Recovered event")


def test_operator_restart_adopts_without_duplicate(
        operator: OperatorThread, kubectl: KubeClient, docker_client: docker.DockerClient,
        cleanup: list[str]) -> None:
    ensure_secret(kubectl, "llm", KEY_1)
    cleanup.append("hotel")
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE, workspace("hotel"))
    before = ready(kubectl, "hotel")
    container_id = before["status"]["containerID"]
    operator.stop()
    operator.start()
    assert operator.controller is not None and operator.controller.operator is not None
    stats = operator.controller.operator.stats
    wait_for(lambda: stats.triggers.get("resume", 0) >= 1 and stats.reconciles >= 1, 30,
             "the restarted operator resumed the workspace")
    # A second pass, on purpose: a label change wakes the worker again.
    passes = stats.reconciles
    kubectl.patch(WORKSPACES, "workspaces", NAMESPACE, "hotel",
                  {"metadata": {"labels": {"touched": "yes"}}})
    wait_for(lambda: stats.reconciles > passes, EVENT_DRIVEN, "another pass after the touch")
    after = ready(kubectl, "hotel")
    assert after["status"]["containerID"] == container_id
    assert after["status"]["restartCount"] == before["status"]["restartCount"] == 0
    assert [c.id for c in managed(docker_client, "hotel")] == [container_id]
    assert not [e for e in events(kubectl, "hotel") if e.get("reason") == "Recreating"]


def test_invalid_workspace_is_rejected_by_the_api_with_the_field_path(
        operator: OperatorThread, kubectl: KubeClient) -> None:
    bad = workspace("india")
    bad["spec"]["llm"]["provider"] = "no-such-provider"
    with pytest.raises(ApiError) as caught:
        kubectl.create(WORKSPACES, "workspaces", NAMESPACE, bad)
    assert caught.value.status == 422
    assert "spec.llm.provider" in caught.value.body["message"]
    assert kubectl.find(WORKSPACES, "workspaces", NAMESPACE, "india") is None


def live_token(docker_client: docker.DockerClient, container_id: str) -> str:
    """The token the agent of this container authenticates with (its token file)."""
    code, out = docker_client.containers.get(container_id).exec_run(
        ["cat", "/configs/.auth_token"])
    assert code == 0 and isinstance(out, bytes), out
    return out.decode().strip()


def creates_and_destroys(client: docker.DockerClient, name: str, since_ns: int,
                         until_ns: int) -> list[str]:
    """Docker's own record of every container of `name` created or removed in the
    window (nanoseconds since the epoch): catches a recreate between two polls too."""
    found = client.events(since=since_ns // 10**9, until=until_ns // 10**9 + 1, decode=True,
                          filters={"type": "container", "event": ["create", "destroy"],
                                   "label": [f"wsctl.dev/instance={INSTANCE}",
                                             f"wsctl.dev/workspace={NAMESPACE}.{name}"]})
    return [f"{e['Action']} {e['id'][:12]}" for e in found
            if since_ns <= int(e["timeNano"]) <= until_ns]


def test_peered_replicas_on_one_database_fail_over_without_recreate(
        operator: OperatorThread, kubectl: KubeClient, docker_client: docker.DockerClient,
        cleanup: list[str], fresh_dsn: str) -> None:
    """HA as docs/kubernetes.md documents it: two replicas in one peering object, each
    with its own data dir, both on one PostgreSQL (one DATABASE_URL) and one registry
    port (SO_REUSEPORT). The lower priority pauses yet records what reaches its
    registry in the shared store, where the leader reads it; when the leader goes,
    it takes over the same container: no recreate, never a second container."""
    operator.stop()  # the session's standalone operator would act regardless of peering
    replicas: list[OperatorThread] = []
    workspace_id = f"{NAMESPACE}.kilo"
    try:
        kubectl.request("POST", "/apis/kopf.dev/v1/clusterkopfpeerings", {
            "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
            "metadata": {"name": "wsctl-ha"}})
        ensure_secret(kubectl, "llm", KEY_1)
        registry_port = free_port(operator.gateway)
        for priority in (200, 100):
            replica = OperatorThread(
                kube_url=operator.kube_url, data_dir=new_dir("wsctl-op-ha-"),
                cache_dir=operator.cache_dir, network=operator.network,
                instance=operator.instance, gateway=operator.gateway,
                peering=("wsctl-ha", priority), database_url=fresh_dsn,
                registry_port=registry_port)
            replicas.append(replica.start())
            if priority == 200:
                cleanup.append("kilo")
                kubectl.create(WORKSPACES, "workspaces", NAMESPACE, workspace("kilo"))
                ready(kubectl, "kilo", where="with the leader alone")
        first, second = replicas
        assert first.controller is not None and second.controller is not None
        leader, standby = first.controller.operator, second.controller.operator
        assert leader is not None and standby is not None
        # The standby has seen the leader's peering record and paused: touch the
        # workspace; the leader reconciles it, the standby never does.
        passes = leader.stats.reconciles
        kubectl.patch(WORKSPACES, "workspaces", NAMESPACE, "kilo",
                      {"metadata": {"labels": {"touched": "yes"}}})
        wait_for(lambda: leader.stats.reconciles > passes, EVENT_DRIVEN, "leader's pass")
        assert standby.stats.reconciles == 0
        before = ready(kubectl, "kilo")
        container_id = before["status"]["containerID"]
        assert [c.id for c in managed(docker_client, "kilo")] == [container_id]

        # A registry write that reaches the paused standby is seen by the leader. Both
        # listen on one port, and the kernel spreads connections between them: send
        # registers (with the agent's live token, claiming its own URL) until one was
        # handled by the standby; each names itself in the agent card. The agent
        # itself registered once, before the standby started: the counters move for
        # these registers only.
        leader_store, standby_registry = first.controller.store, second.controller.registry
        leader_registry = first.controller.registry
        assert leader_store is not None and standby_registry and leader_registry
        agent = call(first, leader_store.get_registration(workspace_id))
        assert agent is not None and agent.url and agent.agent_card
        token = live_token(docker_client, container_id)
        probe = ""
        for attempt in range(40):
            counts = (leader_registry.counters.registers, standby_registry.counters.registers)
            card = {**agent.agent_card, "name": f"ha-probe-{attempt}"}
            status, body = post_json(f"{first.registry}/registry/register", {
                "workspace_id": workspace_id, "url": agent.url, "agent_card": card}, token)
            assert status == 200, (
                f"register refused: {status} {body}; auth failures: leader "
                f"{leader_registry.counters.auth_failures}, standby "
                f"{standby_registry.counters.auth_failures}")
            by_standby = standby_registry.counters.registers - counts[1]
            assert by_standby + leader_registry.counters.registers - counts[0] == 1
            if by_standby:
                probe = card["name"]
                break
        assert probe, "no register reached the standby in 40 connections"
        # The leader's reads: the registration row, and the one-statement read its
        # reconciler plans from (registered_at is a sign of life for the health verdict).
        seen = call(first, leader_store.get_registration(workspace_id))
        assert seen is not None and seen.agent_card is not None
        assert seen.agent_card["name"] == probe
        assert seen.registered_at is not None and agent.registered_at is not None
        assert seen.registered_at > agent.registered_at
        planned = call(first, leader_store.observe_registry(
            workspace_id, datetime.now(UTC) - timedelta(minutes=5)))
        assert planned.agent.registered_at == seen.registered_at
        assert planned.agent.registered_generation == before["status"]["tokenGeneration"]
        assert standby.stats.reconciles == 0  # the standby's register woke nothing there

        # The leader leaves (its record goes with it): the standby takes over the same
        # container. Docker and the Workspace are watched until the new leader has run
        # a pass of its own after a touch.
        started = time.time_ns()
        samples: list[tuple[list[str], str, str | None]] = []

        def sample() -> tuple[list[str], str, str | None]:
            """(managed container ids, Ready, status.containerID) now; kept."""
            obj = get(kubectl, "kilo")
            samples.append(([c.id for c in managed(docker_client, "kilo")],
                            condition(obj, "Ready").get("status", ""),
                            obj["status"].get("containerID")))
            return samples[-1]

        first.stop()
        wait_for(lambda: sample() and standby.stats.reconciles > 0, 30,
                 "the standby took over")
        passes = standby.stats.reconciles
        kubectl.patch(WORKSPACES, "workspaces", NAMESPACE, "kilo",
                      {"metadata": {"labels": {"touched": "again"}}})
        wait_for(lambda: sample() and standby.stats.reconciles > passes, EVENT_DRIVEN,
                 "the new leader's pass after the touch")
        # And for longer than the heartbeat TTL (3 s): the new leader's later passes
        # (its requeue at the TTL) still find the agent fresh, heartbeating to it now.
        passes, beats = standby.stats.reconciles, standby_registry.counters.heartbeats
        watch_until = time.monotonic() + 4.0
        while time.monotonic() < watch_until:
            sample()
            time.sleep(0.2)
        ended = time.time_ns()
        assert standby.stats.reconciles > passes
        assert standby_registry.counters.heartbeats > beats
        after = get(kubectl, "kilo")
        assert standby.stats.triggers.get("resume", 0) >= 1
        assert {tuple(ids) for ids, _, _ in samples} == {(container_id,)}, samples
        assert {(ready_, shown) for _, ready_, shown in samples} == {("True", container_id)}
        assert creates_and_destroys(docker_client, "kilo", started, ended) == []
        assert condition(after, "Ready")["status"] == "True"
        assert after["status"]["containerID"] == container_id
        assert after["status"]["restartCount"] == 0
        assert after["status"]["tokenGeneration"] == before["status"]["tokenGeneration"]
        assert "lastRecreateReason" not in after["status"]
        assert [e["reason"] for e in events(kubectl, "kilo")
                if e.get("reason") in ("Created", "Recreating")] == ["Created"]
        # Cleanup of kilo (the finalizer) needs an acting operator: the standby is one now.
        kubectl.delete(WORKSPACES, "workspaces", NAMESPACE, "kilo")
        wait_for(lambda: kubectl.find(WORKSPACES, "workspaces", NAMESPACE, "kilo") is None,
                 30, "kilo deleted by the new leader")
        assert managed(docker_client, "kilo") == []
    finally:
        for replica in replicas:
            replica.stop()
            remove_dir(replica.data_dir)
        operator.start()


def http_get(url: str) -> tuple[int, str, str]:
    """(status, Content-Type, body) of a GET without credentials."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_metrics_and_probes_on_the_operators_listener(
        operator: OperatorThread, kubectl: KubeClient, cleanup: list[str]) -> None:
    """`wsctl run --kubernetes` serves /metrics, /healthz and /readyz on --listen (no
    token): the same families as standalone mode, less the work queue and resyncs."""
    assert http_get(f"{operator.http}/healthz")[::2] == (200, '{"status": "ok"}')
    assert http_get(f"{operator.http}/readyz")[::2] == (200, '{"status": "ready"}')

    def scrape() -> Exposition:
        status, content_type, text = http_get(f"{operator.http}/metrics")
        assert (status, content_type) == (200, CONTENT_TYPE)
        return parse(text)

    before = scrape()
    assert {"wsctl_reconcile_duration_seconds", "wsctl_recreates_total",
            "wsctl_degraded_workspaces", "wsctl_workspaces", "wsctl_docker_api_calls_total",
            "wsctl_agent_heartbeats_total", "wsctl_db_queries_total"} <= set(before.types)
    assert not {"wsctl_queue_depth", "wsctl_resyncs_total"} & set(before.types)

    ensure_secret(kubectl, "llm", KEY_1)
    cleanup.extend(["mike", "november"])
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE, workspace("mike"))
    old_id = ready(kubectl, "mike")["status"]["containerID"]
    kubectl.patch(WORKSPACES, "workspaces", NAMESPACE, "mike", {"metadata": {"annotations": {
        "wsctl.dev/restartedAt": "2030-01-01T00:00:00Z"}}})
    replaced(kubectl, "mike", old_id)
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE,
                   workspace("november", secret_name="llm-never"))
    failed = wait_for(lambda: (lambda o: o if condition(o, "Degraded").get("status") == "True"
                               else None)(get(kubectl, "november")), 30, "november Degraded")
    reason = condition(failed, "Degraded")["reason"]

    def counted() -> Exposition | None:
        e = scrape()
        heartbeats = e.value("wsctl_agent_heartbeats_total") > before.value(
            "wsctl_agent_heartbeats_total")
        return e if heartbeats and e.get("wsctl_degraded_workspaces", reason=reason) else None

    after = wait_for(counted, 30, f"heartbeats and a workspace Degraded {reason} counted")
    assert never_decreased(before, after) == []
    count = "wsctl_reconcile_duration_seconds_count"
    assert after.value(count) >= before.value(count) + 3
    assert (after.get("wsctl_recreates_total", reason="RestartRequested")
            - before.get("wsctl_recreates_total", reason="RestartRequested")) == 1
    assert after.value("wsctl_workspaces") >= 2
    assert sum(after.labelled("wsctl_docker_api_calls_total").values()) > sum(
        before.labelled("wsctl_docker_api_calls_total").values())


CONNECT_PROBE = r"""
import os, socket, sys
host, port = os.environ["HTTPS_PROXY"].split("//")[1].rsplit(":", 1)
with socket.create_connection((host, int(port)), timeout=5) as s:
    s.sendall(f"CONNECT {sys.argv[1]} HTTP/1.1\r\nHost: {sys.argv[1]}\r\n\r\n".encode())
    print(s.recv(200).split(b"\r\n")[0].decode())
"""


def test_an_allowlist_workspace_goes_through_the_operators_egress_proxy(
        operator: OperatorThread, kubectl: KubeClient, docker_client: docker.DockerClient,
        cleanup: list[str]) -> None:
    """Kubernetes mode serves the egress proxy too; it reads the Workspace object as the
    operator sees it, so an edit of `allow` holds for the next connection."""
    ensure_secret(kubectl, "llm", KEY_1)
    cleanup.append("egop")
    listed = f"{operator.gateway}:{operator.registry_port}"  # something that answers
    kubectl.create(WORKSPACES, "workspaces", NAMESPACE, workspace(
        "egop", egress={"mode": "allowlist", "allow": [listed]}))
    cid = ready(kubectl, "egop")["status"]["containerID"]
    env = container_env(docker_client, cid)
    assert env["HTTPS_PROXY"] == f"http://host.docker.internal:{operator.registry_port + 1}"
    assert "host.docker.internal" in env["NO_PROXY"]

    def connect(target: str) -> str:
        code, out = docker_client.containers.get(cid).exec_run(
            ["python3", "-c", CONNECT_PROBE, target], user="10001:10001")
        assert code == 0 and isinstance(out, bytes), out
        return out.decode().strip()

    assert connect(listed) == "HTTP/1.1 200 Connection established"
    assert connect("elsewhere.example:443") == "HTTP/1.1 403 Forbidden"
    kubectl.patch(WORKSPACES, "workspaces", NAMESPACE, "egop",
                  {"spec": {"egress": {"mode": "allowlist", "allow": []}}})
    wait_for(lambda: connect(listed) == "HTTP/1.1 403 Forbidden", EVENT_DRIVEN,
             "the narrowed list held")
    assert get(kubectl, "egop")["status"]["containerID"] == cid  # allow: no recreate
    _, _, text = http_get(f"{operator.http}/metrics")
    counted = parse(text)
    assert counted.value("wsctl_egress_connections_total", workspace="default.egop",
                         decision="allowed") == 1
    assert counted.value("wsctl_egress_connections_total", workspace="default.egop",
                         decision="refused") >= 2
