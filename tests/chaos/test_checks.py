"""The verdict's rules with plain values: convergence, cause attribution, secrets."""

from __future__ import annotations

from typing import Any

from controller.chaos.checks import (
    attribute,
    convergence_problems,
    find_secrets,
    orphans,
    percentile,
    unreported,
)
from controller.chaos.model import DegradedSeen, FaultPlan, FaultRecord
from controller.chaos.workload import request_ids
from tests.chaos.fakes import view

WS = "chaos.w01"


def online(container_id: str = f"id-{WS}-g2", generation: int = 2,
           phase: str = "Online") -> dict[str, Any]:
    ready = "True" if phase == "Online" else "False"
    degraded = [] if phase == "Online" else [
        {"type": "Degraded", "status": "True", "reason": "HeartbeatStale", "message": "x"}]
    return {"metadata": {"name": "w01", "generation": 3},
            "status": {"phase": phase, "observedGeneration": 3, "containerID": container_id,
                       "tokenGeneration": generation, "configHash": "h1",
                       "conditions": [{"type": "Ready", "status": ready}, *degraded]}}


def test_converged_means_online_one_running_container_current_hash() -> None:
    assert convergence_problems(online(), [view(WS, 2)], "h1") == []
    assert convergence_problems(None, [], "h1") == ["workspace not found"]
    assert convergence_problems(online(phase="Degraded"), [view(WS, 2)], "h1")[:2] == [
        "phase Degraded (HeartbeatStale)", "Ready is not True"]
    two = convergence_problems(online(), [view(WS, 1, "exited"), view(WS, 2)], "h1")
    assert two and two[0].startswith("2 containers")
    assert convergence_problems(online(), [view(WS, 2, config_hash="old")], "h1") == [
        "container config hash old != current h1"]
    assert convergence_problems(online(generation=3), [view(WS, 2)], "h1") == [
        "container token generation 2 != status.tokenGeneration 3"]
    assert "is not status.containerID" in convergence_problems(
        online(container_id="other"), [view(WS, 2)], "h1")[0]
    assert convergence_problems(online(), [view(WS, 2, "paused")], "h1") == [
        f"container wsctl-{WS}-g2 is paused"]


def fault(kind: str, target: str | None, start: float, end: float | None,
          may: set[str], must: set[str] | None = None) -> FaultRecord:
    plan = FaultPlan(1, kind, target, 0.0)
    affected = (target,) if target else ("w01", "w02")
    r = FaultRecord(plan, affected, frozenset(may), frozenset(must or set()))
    r.injected_at, r.lifted_at, r.converged_at = start, start, end
    return r


def test_a_degraded_within_a_fault_that_may_cause_it_is_attributed() -> None:
    pause = fault("pause", "w01", 10, 20, {"HeartbeatStale"}, {"HeartbeatStale"})
    seen = [DegradedSeen(14, "w01", "HeartbeatStale", "no heartbeat for 4s", "status")]
    assert attribute(seen, [pause], 100) == []
    assert pause.detected == {"HeartbeatStale"}
    assert unreported([pause]) == []


def test_a_degraded_with_the_wrong_reason_names_the_fault() -> None:
    pause = fault("pause", "w01", 10, 20, {"HeartbeatStale"})
    seen = [DegradedSeen(14, "w01", "AgentUnhealthy", "llm-auth", "event")]
    (v,) = attribute(seen, [pause], 100)
    assert (v.invariant, v.workspace, v.fault) == ("degraded-cause", "w01", "#1 pause on w01")
    assert "may cause only HeartbeatStale" in v.detail


def test_a_degraded_with_no_fault_in_effect_is_a_violation() -> None:
    kill = fault("kill", "w01", 10, 12, {"CrashLooping"})
    fleet = fault("postgres-restart", None, 50, 52, {"HeartbeatStale"})
    seen = [DegradedSeen(30, "w01", "HeartbeatStale", "", "status"),
            DegradedSeen(16, "w01", "CrashLooping", "", "status"),  # within grace
            DegradedSeen(51, "w02", "HeartbeatStale", "", "status")]  # fleet fault
    (v,) = attribute(seen, [kill, fleet], 100)
    assert v.fault == "none" and "no fault in effect" in v.detail


def test_a_fault_that_must_be_reported_but_was_not() -> None:
    network = fault("network", "w01", 10, 20, {"HeartbeatStale"}, {"HeartbeatStale"})
    (v,) = unreported([network])
    assert v.workspace == "w01" and "never reported Degraded HeartbeatStale" in v.detail


def test_secret_scan_names_where_and_which_never_the_value() -> None:
    found = find_secrets({"controller-0.log": "x sk-PLANTED y", "describe w01": "{}"},
                         {"llm-api-key": "sk-PLANTED", "admin-token": "adm", "empty": ""})
    assert found == [("controller-0.log", "llm-api-key")]


def test_orphans_and_percentiles_and_request_ids() -> None:
    stray = view("chaos.ghost", 1)
    assert orphans([view(WS, 1), stray], {WS}) == [stray]
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([1.0, 9.0], 99) == 9.0
    assert request_ids({"id": "a", "params": {"message": {"messageId": "b"}}}) == {"a", "b"}
    assert request_ids("garbage") == set()


def test_server_errors_are_answers_violations_naming_the_last_fault() -> None:
    from controller.chaos.checks import server_errors
    from controller.chaos.workload import Failed
    from tests.chaos.fakes import record

    _, engine = record("docker-restart", None)
    engine.injected_at = 5.0
    failed = [Failed("w01", 6.0, 6.5, "HTTP 500", True),
              Failed("w01", 7.0, 7.5, "HTTP 503 engine_unavailable (Retry-After)", False),
              Failed("w01", 8.0, 8.1, "HTTP 504", True),
              Failed("w02", 9.0, 9.1, "HTTP 502 agent_unreachable", False),
              Failed("w03", 9.0, 9.1, "HTTP 500", True)]
    violations = server_errors(failed, [engine], 20.0)
    assert [(v.invariant, v.workspace, v.fault) for v in violations] == [
        ("answers", "w01", "#1 docker-restart on fleet"), ("answers", "w03", "none")]
    assert violations[0].detail == ("2 message/send answered with a server error "
                                    "(HTTP 500, HTTP 504), first at 6.0s")
    assert server_errors([f for f in failed if not f.server_error], [engine], 20.0) == []


def test_more_than_5_percent_not_injected_fails_the_run() -> None:
    from controller.chaos.checks import not_injected
    from tests.chaos.fakes import record

    records = []
    for _ in range(40):
        _, r = record("kill", "w01")
        r.injected_at = 1.0
        records.append(r)
    assert not_injected(records, 9.0) == []
    records[0].injected_at, records[0].skipped = None, "no running container"
    records[1].missed = "controller never logged 'stalling after StopContainer'"
    assert not_injected(records, 9.0) == []  # 2 of 40: 5%, at the limit
    records[2].injected_at, records[2].skipped = None, "no running container"
    (violation,) = not_injected(records, 9.0)
    assert violation.invariant == "injected"
    assert violation.detail.startswith("3 of 40 faults not injected as planned (more than 5%)")
    assert "kill: controller never logged" in violation.detail
    assert "kill: no running container" in violation.detail


def test_lost_files_name_the_files_and_the_faults_since_the_first_was_written() -> None:
    from controller.chaos.checks import lost_files
    from controller.chaos.files import FileLoss, WrittenFile

    def written(seq: int, at: float) -> WrittenFile:
        return WrittenFile("w01", seq, "d", at, at + 0.1, "c0ffee0123456789")

    early = fault("kill", "w01", 2.0, 3.0, set())  # over before the first lost file
    kill = fault("kill", "w01", 20.0, 21.0, set())
    kill.plan = FaultPlan(2, "kill", "w01", 0.0)
    other = fault("kill", "w02", 20.0, 21.0, set())
    loss = FileLoss("w01", missing=(written(4, 12.0), written(5, 15.0)),
                    changed=(written(7, 18.0),), acked=9)
    (v,) = lost_files([loss, FileLoss("w02", acked=3)], [early, kill, other], 30.0)
    assert (v.invariant, v.workspace, v.fault) == ("files", "w01", "#2 kill on w01")
    assert v.detail == ("of 9 acknowledged files in /workspace/chaos: 2 missing (4.txt, "
                        "5.txt); 1 with other content (7.txt); the first written at 12.0s "
                        "into container c0ffee012345, the last at 18.0s into c0ffee012345 "
                        "(1 container(s): c0ffee012345)")
    # Which intact file came first after the loss brackets the moment it happened.
    later = WrittenFile("w01", 8, "d", 26.0, 26.1, "beef00112233aa")
    (bracketed,) = lost_files([FileLoss("w01", missing=(written(4, 12.0),), acked=9,
                                        kept_after=later)], [kill], 30.0)
    assert bracketed.detail.endswith("into container c0ffee012345; 8.txt, written at 26.0s "
                                     "into beef00112233, is intact")
    (unread,) = lost_files([FileLoss("w01", unreadable="no running container", acked=9)],
                           [kill], 30.0)
    assert unread.detail == "9 acknowledged file(s) could not be read back: no running container"


def test_a_message_sent_to_a_suspended_workspace_must_be_answered() -> None:
    from controller.chaos.checks import unanswered_wakes
    from controller.chaos.workload import Failed

    suspend = fault("suspend", "w01", 10.0, 14.0, set())
    suspend.lifted_at = 10.2  # the API answered: suspended from here on
    failed = [Failed("w01", 10.1, 10.3, "HTTP 502 agent_unreachable", False),  # in flight
              Failed("w01", 12.0, 27.0, "no answer", False),
              Failed("w01", 11.0, 11.1, "HTTP 409 agent_unavailable", False),
              Failed("w02", 11.0, 11.1, "no answer", False),
              Failed("w01", 30.0, 30.1, "no answer", False)]  # after it converged
    (v,) = unanswered_wakes(failed, [suspend], 40.0)
    assert (v.invariant, v.workspace, v.fault) == ("answers", "w01", "#1 suspend on w01")
    assert v.detail == ("2 message/send to the suspended workspace not answered (HTTP 409 "
                        "agent_unavailable, no answer), first sent at 11.0s: a message must "
                        "wake it and be answered")
    assert unanswered_wakes(failed[:1], [suspend], 40.0) == []
    kill = fault("kill", "w01", 10.0, 14.0, set())
    assert unanswered_wakes(failed, [kill], 40.0) == []
