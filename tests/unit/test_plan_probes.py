"""plan() for spec.agent.protocol none: health from the controller's probes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from controller.core.model import Workspace, WorkspaceStatus
from controller.core.observed import Observed, ObservedTokens, ProbeResults
from controller.core.ops import DeliverRestartContext, RecreateReason
from tests.unit.test_plan import T0, cond, container, run, ws

HTTP = {"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": 1,
        "failureThreshold": 2}


def none_ws(**spec: Any) -> Workspace:
    return ws(agent={"protocol": "none"}, **spec)


def observed(w: Workspace, probes: ProbeResults | None, **kw: Any) -> Observed:
    return Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1),
                    probes=probes, **kw)


def message(p: Any, type_: str) -> str:
    assert p.status is not None
    c = p.status.condition(type_)
    assert c is not None
    return str(c.message)


def test_ready_from_the_readiness_probe_never_from_heartbeats() -> None:
    w = none_ws(readinessProbe=HTTP)
    waiting = run(w, observed(w, ProbeResults("c1")))
    assert cond(waiting, "Ready") == ("False", "WaitingForReadiness")
    assert cond(waiting, "Degraded") == ("False", "Healthy")
    assert cond(waiting, "Progressing") == ("True", "WaitingForReadiness")
    assert "httpGet :8000/healthz" in message(waiting, "Ready")
    ready = run(w, observed(w, ProbeResults("c1", ready=True, ever_ready=True)))
    assert cond(ready, "Ready") == ("True", "ProbeSucceeded")
    assert ready.status is not None and ready.status.phase == "Online"
    assert ready.ops == ()
    assert ("Normal", "Online", "readiness probe succeeded") in [
        (e.type, e.reason, e.message) for e in ready.events]


def test_results_of_another_container_do_not_count() -> None:
    w = none_ws(readinessProbe=HTTP)
    p = run(w, observed(w, ProbeResults("c0", ready=True, ever_ready=True)))
    assert cond(p, "Ready") == ("False", "WaitingForReadiness")


def test_without_a_readiness_probe_a_running_container_is_ready() -> None:
    w = none_ws()
    p = run(w, observed(w, None))
    assert cond(p, "Ready") == ("True", "ContainerRunning")
    assert cond(p, "Degraded") == ("False", "Healthy")


def test_a_failing_readiness_probe_is_degraded_naming_the_probe_and_not_recreated() -> None:
    w = none_ws(readinessProbe=HTTP)
    failed = ProbeResults("c1", ready=False, ever_ready=True,
                          ready_detail="httpGet :8000/healthz failed 2 times in a row: "
                                       "connection refused")
    p = run(w, observed(w, failed), now=T0 + timedelta(hours=1))
    assert cond(p, "Degraded") == ("True", "ReadinessProbeFailed")
    assert cond(p, "Ready") == ("False", "ReadinessProbeFailed")
    assert message(p, "Degraded") == ("readinessProbe httpGet :8000/healthz failed 2 times "
                                      "in a row: connection refused")
    assert p.ops == () and p.recreate_reason is None
    assert ("Warning", "ReadinessProbeFailed") in [(e.type, e.reason) for e in p.events]


def test_a_failed_liveness_probe_recreates_the_container() -> None:
    w = none_ws(readinessProbe=HTTP, livenessProbe={"tcpSocket": {"port": 8000}})
    dead = ProbeResults("c1", ready=True, ever_ready=True,
                        live_failed="tcpSocket :8000 failed 3 times in a row: timed out")
    p = run(w, observed(w, dead))
    assert p.recreate_reason == RecreateReason.LIVENESS_FAILED
    warning = next(e for e in p.events if e.type == "Warning")
    assert warning.reason == "LivenessFailed"
    assert warning.message == "livenessProbe tcpSocket :8000 failed 3 times in a row: timed out"


def test_a_liveness_failure_in_a_crash_loop_waits_its_back_off_named() -> None:
    w = none_ws(livenessProbe={"exec": {"command": ["test", "-f", "/tmp/ok"]}})
    dead = ProbeResults("c1", live_failed="exec test -f /tmp/ok failed 3 times in a row: "
                                          "exit code 1")
    now = T0 + timedelta(seconds=30)
    p = run(w, observed(w, dead, recent_crashes=3, last_crash_at=now - timedelta(seconds=4)),
            now=now)
    assert p.recreate_reason is None and p.ops == ()
    assert cond(p, "Degraded") == ("True", "LivenessProbeFailed")
    assert "next recreate in 6s" in message(p, "Degraded")
    assert p.requeue_after is not None and 5.9 <= p.requeue_after <= 6.1


def test_never_ready_within_the_startup_timeout_is_recreated_as_startup_timeout() -> None:
    w = none_ws(readinessProbe=HTTP, startupTimeoutSeconds=30)
    starting = ProbeResults("c1", ready=False, ready_detail="httpGet :8000/healthz failed 2 "
                                                            "times in a row: HTTP 503")
    early = run(w, observed(w, starting), now=T0 + timedelta(seconds=10))
    assert cond(early, "Ready") == ("False", "WaitingForReadiness")
    assert "HTTP 503" in message(early, "Ready")
    assert early.requeue_after is not None and 19.9 <= early.requeue_after <= 20.1
    late = run(w, observed(w, starting), now=T0 + timedelta(seconds=31))
    assert late.recreate_reason == RecreateReason.STARTUP_TIMEOUT
    warning = next(e for e in late.events if e.type == "Warning")
    assert warning.message.startswith("readinessProbe httpGet :8000/healthz did not succeed "
                                      "within 30s")


def test_a_paused_container_is_not_ready() -> None:
    w = none_ws()
    obs = Observed(containers=(container(w, 1, state="paused"),),
                   tokens=ObservedTokens(1, None, 1))
    p = run(w, obs)
    assert cond(p, "Degraded") == ("True", "ContainerPaused")


def test_a_foreign_agent_is_not_sent_the_restart_context() -> None:
    previous = WorkspaceStatus(token_generation=1, restart_count=1,
                               last_recreate_reason="RestartRequested")
    w = none_ws()
    p = run(w, observed(w, None), previous=previous)
    assert cond(p, "Ready")[0] == "True"
    assert not any(isinstance(op, DeliverRestartContext) for op in p.ops)
