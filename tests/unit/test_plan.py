"""The planner as data: every decision of docs/design.md section 5, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.core.model import PURGE_ANNOTATION, RegisterFailure, Workspace, WorkspaceStatus
from controller.core.observed import (
    AuthFailure,
    Observed,
    ObservedAgent,
    ObservedContainer,
    ObservedTokens,
)
from controller.core.ops import (
    ActivateToken,
    CaptureDiagnostics,
    CreateContainer,
    DeliverRestartContext,
    EnsureVolume,
    Plan,
    PurgeWorkspace,
    RecreateReason,
    RefreshToken,
    RemoveContainer,
    RemoveVolume,
    RevokeTokens,
    StartContainer,
    StopContainer,
    Suspend,
    WriteToken,
)
from controller.core.plan import plan, plan_orphans
from controller.core.projection import ProjectionError, project
from controller.core.settings import PlatformSettings
from tests.unit.helpers import minimax

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SETTINGS = PlatformSettings()
SECRETS = {("minimax", "api-key"): "sk-unit"}


def ws(**spec: Any) -> Workspace:
    w = minimax(**spec)
    return w.model_copy(update={"metadata": w.metadata.model_copy(update={"generation": 1})})


def container(w: Workspace, gen: int = 1, state: str = "running", hash_: str | None = None,
              started: datetime | None = T0, **kw: Any) -> ObservedContainer:
    return ObservedContainer(
        id=f"c{gen}", name=f"wsctl-{w.key.id}-g{gen}", workspace_id=w.key.id, state=state,
        config_hash=hash_ if hash_ is not None else project(w, SECRETS, SETTINGS).config_hash,
        token_generation=gen, started_at=started, **kw)


def run(w: Workspace, observed: Observed, previous: WorkspaceStatus | None = None,
        now: datetime = T0 + timedelta(seconds=1), secrets: dict[tuple[str, str], str] = SECRETS,
        ) -> Plan:
    try:
        projection: Any = project(w, secrets, SETTINGS)
    except ProjectionError as exc:
        projection = exc
    return plan(w, projection, observed, previous, now, SETTINGS)


def kinds(p: Plan) -> list[str]:
    return [type(op).__name__ for op in p.ops]


def cond(p: Plan, type_: str) -> tuple[str, str]:
    assert p.status is not None
    c = p.status.condition(type_)
    assert c is not None
    return c.status, c.reason


def registered(gen: int = 1, at: datetime = T0 + timedelta(seconds=1), **kw: Any) -> ObservedAgent:
    return ObservedAgent(registered_at=at, registered_generation=gen, last_heartbeat_at=at,
                         heartbeat_generation=gen, heartbeat_status="healthy", **kw)


# ------------------------------------------------------------------ create / recreate


def test_first_create_orders_ops_safely() -> None:
    p = run(ws(), Observed())
    assert p.action == "create" and p.recreate_reason == RecreateReason.CREATED
    assert kinds(p) == ["EnsureVolume", "CreateContainer", "WriteToken", "ActivateToken",
                        "StartContainer"]
    volume = p.ops[0]
    assert isinstance(volume, EnsureVolume) and volume.first
    assert volume.volume.name == "wsctl-default.alice-workspace"
    assert volume.volume.mount_path == "/workspace" and volume.volume.owner_image is None
    create = p.ops[1]
    assert isinstance(create, CreateContainer)
    assert [(m.source, m.target) for m in create.spec.mounts] == [
        ("wsctl-default.alice-configs", "/configs"),
        ("wsctl-default.alice-workspace", "/workspace")]
    assert create.spec.name == "wsctl-default.alice-g1"
    assert p.status is not None and p.status.token_generation == 1
    assert p.status.restart_count == 0
    assert cond(p, "Progressing") == ("True", "ContainerStarting")
    assert cond(p, "Degraded")[0] == "False"


def test_recreate_after_exit_captures_diagnostics_first_then_never_two_running() -> None:
    w = ws()
    old = container(w, 3, state="exited", exit_code=137)
    p = run(w, Observed(containers=(old,), tokens=ObservedTokens(3, None, 3)),
            previous=WorkspaceStatus(token_generation=3, restart_count=2))
    assert p.recreate_reason == RecreateReason.CONTAINER_EXITED
    assert kinds(p) == ["CaptureDiagnostics", "EnsureVolume", "CreateContainer", "WriteToken",
                        "ActivateToken", "RemoveContainer", "StartContainer"]
    assert p.ops[0] == CaptureDiagnostics("c3", "ContainerExited")
    assert isinstance(p.ops[1], EnsureVolume) and not p.ops[1].first  # same volume, no news
    assert isinstance(p.ops[4], ActivateToken) and p.ops[4].generation == 4
    assert p.status is not None and p.status.restart_count == 3


def test_running_old_container_is_stopped_before_new_starts() -> None:
    w = ws()
    old = container(w, 1, hash_="stale")
    p = run(w, Observed(containers=(old,), tokens=ObservedTokens(1, None, 1)))
    assert p.recreate_reason == RecreateReason.CONFIG_CHANGED
    names = kinds(p)
    assert names.index("StopContainer") < names.index("RemoveContainer") \
        < names.index("StartContainer")
    assert names.index("ActivateToken") < names.index("StopContainer")


def test_oom_is_named() -> None:
    w = ws()
    p = run(w, Observed(containers=(container(w, 1, state="exited", oom_killed=True),),
                        tokens=ObservedTokens(1, None, 1)))
    assert p.recreate_reason == RecreateReason.OOM_KILLED


def test_restart_requested_is_told_apart_from_config_change() -> None:
    w = ws()
    old = container(w, 1)
    bumped = ws(restartedAt="2026-11-24T12:00:05Z")
    p = run(bumped, Observed(containers=(old,), tokens=ObservedTokens(1, None, 1)))
    assert p.recreate_reason == RecreateReason.RESTART_REQUESTED
    changed = ws(env=[{"name": "LOG_LEVEL", "value": "debug"}])
    p = run(changed, Observed(containers=(old,), tokens=ObservedTokens(1, None, 1)))
    assert p.recreate_reason == RecreateReason.CONFIG_CHANGED


def test_revoked_token_recreates() -> None:
    w = ws()
    p = run(w, Observed(containers=(container(w, 1),), tokens=ObservedTokens(None, None, 1)))
    assert p.recreate_reason == RecreateReason.TOKEN_REVOKED
    assert p.status is not None and p.status.token_generation == 2


def test_generation_never_reused() -> None:
    w = ws()
    p = run(w, Observed(tokens=ObservedTokens(None, None, 7)),
            previous=WorkspaceStatus(token_generation=5))
    assert p.recreate_reason == RecreateReason.CONTAINER_MISSING
    assert isinstance(p.ops[2], WriteToken) and p.ops[2].generation == 8


def test_token_rejected_after_start_recreates_but_old_stale_does_not() -> None:
    w = ws()
    c = container(w, 2)
    obs = Observed(containers=(c,), tokens=ObservedTokens(2, None, 2),
                   agent=registered(2, last_auth_failure=AuthFailure(
                       T0 + timedelta(seconds=2), "invalid_token")))
    assert run(w, obs).recreate_reason == RecreateReason.TOKEN_REJECTED
    stale_old = replace(obs, agent=registered(2, last_auth_failure=AuthFailure(
        T0 + timedelta(seconds=2), "stale_token", generation=1)))
    assert run(w, stale_old).action == "none"


# ------------------------------------------------------------------ crash safety


def test_interrupted_after_token_activation_is_finished_not_duplicated() -> None:
    w = ws()
    old = container(w, 1, hash_="old")
    new = container(w, 2, state="created", started=None)
    p = run(w, Observed(containers=(old, new), tokens=ObservedTokens(2, None, 2)))
    assert p.action == "resume"
    assert kinds(p) == ["StopContainer", "RemoveContainer", "StartContainer"]
    assert p.ops[-1] == StartContainer(new.name)


def test_interrupted_before_token_activation_is_a_leftover() -> None:
    w = ws()
    old = container(w, 1, hash_="old")
    leftover = container(w, 2, state="created", started=None)
    p = run(w, Observed(containers=(old, leftover), tokens=ObservedTokens(1, None, 2)))
    assert p.action == "recreate"
    removed = [op.container_id for op in p.ops if isinstance(op, RemoveContainer)]
    assert removed == ["c1", "c2"]
    diagnosed = [op.container_id for op in p.ops if isinstance(op, CaptureDiagnostics)]
    assert diagnosed == ["c1"]  # never started: nothing to diagnose
    assert isinstance(p.ops[-1], StartContainer) and p.ops[-1].container_name.endswith("-g3")


def test_stray_containers_are_removed_when_current_is_fine() -> None:
    w = ws()
    stray = container(w, 1, hash_="old", state="exited")
    current = container(w, 2)
    p = run(w, Observed(containers=(stray, current), tokens=ObservedTokens(2, None, 2),
                        agent=registered(2)))
    assert p.action == "cleanup"
    assert kinds(p) == ["RemoveContainer"]


def test_orphans() -> None:
    w = ws()
    ops = plan_orphans([container(w, 1)], known_ids=set(), settings=SETTINGS)
    assert [type(o).__name__ for o in ops] == ["StopContainer", "RemoveContainer"]
    assert plan_orphans([container(w, 1)], known_ids={w.key.id}, settings=SETTINGS) == []


# ------------------------------------------------------------------ conditions


def test_online_when_registered_and_fresh() -> None:
    w = ws()
    p = run(w, Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1),
                        agent=registered(1)))
    assert p.action == "none" and p.ops == ()
    assert p.status is not None and p.status.phase == "Online"
    assert cond(p, "Ready") == ("True", "Registered")
    assert cond(p, "Degraded") == ("False", "Healthy")
    assert cond(p, "Progressing") == ("False", "Complete")
    assert p.requeue_after is not None and p.requeue_after <= SETTINGS.heartbeat_ttl_seconds + 1
    assert [e.reason for e in p.events] == ["Online"]


def budgeted(tokens_per_day: int) -> Workspace:
    w = ws()
    llm = {**w.to_wire()["spec"]["llm"], "budget": {"tokensPerDay": tokens_per_day}}
    return Workspace.model_validate(
        {**w.to_wire(), "spec": {**w.to_wire()["spec"], "llm": llm}})


@pytest.mark.parametrize(("used", "degraded"), [(999, False), (1000, True), (5000, True)])
def test_a_spent_budget_is_degraded_until_the_next_utc_day(used: int, degraded: bool) -> None:
    w = budgeted(1000)
    now = datetime(2026, 12, 3, 23, 0, tzinfo=UTC)
    p = run(w, Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1),
                        agent=registered(1, at=now), llm_tokens_today=used), now=now)
    assert p.ops == ()  # the container is left alone: only its calls are refused
    assert cond(p, "Ready") == ("True", "Registered")
    if degraded:
        assert cond(p, "Degraded") == ("True", "BudgetExhausted")
        assert p.status is not None
        message = p.status.condition("Degraded").message  # type: ignore[union-attr]
        assert "1000 tokens" in message and "2026-12-03" in message
        assert p.requeue_after is not None and p.requeue_after <= 3600.05
    else:
        assert cond(p, "Degraded") == ("False", "Healthy")


def test_a_budget_raise_clears_budget_exhausted() -> None:
    w = budgeted(1000)
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    observed = Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1),
                        agent=registered(1, at=now), llm_tokens_today=1500)
    spent = run(w, observed, now=now)
    assert cond(spent, "Degraded") == ("True", "BudgetExhausted")
    raised = run(budgeted(2000), observed, previous=spent.status, now=now)
    assert cond(raised, "Degraded") == ("False", "Healthy")
    assert raised.ops == ()  # a budget is read by the gateway: no new container for it


def test_a_sick_agent_keeps_its_own_reason_over_budget_exhausted() -> None:
    w = budgeted(10)
    p = run(w, Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1),
                        agent=replace(registered(1), heartbeat_status="unhealthy"),
                        llm_tokens_today=50))
    assert cond(p, "Degraded")[0] == "True"
    assert cond(p, "Degraded")[1] != "BudgetExhausted"


def test_slow_boot_is_progressing_until_deadline_then_startup_timeout() -> None:
    w = ws(startupTimeoutSeconds=60)
    obs = Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1))
    slow = run(w, obs, now=T0 + timedelta(seconds=59))
    assert slow.status is not None and slow.status.phase == "Provisioning"
    assert cond(slow, "Progressing") == ("True", "WaitingForRegistration")
    assert cond(slow, "Degraded")[0] == "False"
    assert slow.requeue_after is not None and 1.0 <= slow.requeue_after < 1.1
    late = run(w, obs, previous=slow.status, now=T0 + timedelta(seconds=61))
    assert late.recreate_reason == RecreateReason.STARTUP_TIMEOUT  # acted on: see below
    assert [(e.type, e.reason) for e in late.events] == [
        ("Warning", "StartupTimeout"), ("Normal", "Recreating")]
    assert "did not register within 60s" in late.events[0].message


def test_register_failure_marker_degrades_with_its_class_and_clears() -> None:
    w = ws()
    marker = RegisterFailure(at=T0 + timedelta(seconds=1), class_="blocked_private_url",
                             message="http://10.11.12.13:8000 is private")
    obs = Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1),
                   agent=ObservedAgent(register_failure=marker))
    failed = run(w, obs)
    assert cond(failed, "Degraded") == ("True", "RegisterFailed")
    assert failed.status is not None
    degraded = failed.status.condition("Degraded")
    assert degraded is not None and "blocked_private_url" in degraded.message
    healed = run(w, replace(obs, agent=ObservedAgent(
        last_heartbeat_at=T0 + timedelta(seconds=3), heartbeat_generation=1,
        heartbeat_status="healthy")), previous=failed.status, now=T0 + timedelta(seconds=4))
    assert healed.status is not None and healed.status.phase == "Online"
    assert cond(healed, "Ready") == ("True", "Heartbeating")
    assert {e.reason for e in healed.events} == {"Recovered", "Online"}


def test_marker_from_before_container_start_is_ignored() -> None:
    w = ws()
    old_marker = RegisterFailure(at=T0 - timedelta(seconds=30), class_="missing_url", message="")
    p = run(w, Observed(containers=(container(w, 2),), tokens=ObservedTokens(2, None, 2),
                        agent=ObservedAgent(register_failure=old_marker)))
    assert cond(p, "Degraded")[0] == "False"
    assert cond(p, "Progressing")[0] == "True"


def test_unhealthy_agent_names_the_missing_variable() -> None:
    w = ws()
    agent = replace(registered(1), heartbeat_status="unhealthy",
                    heartbeat_error="llm-auth: no ANTHROPIC_AUTH_TOKEN set")
    p = run(w, Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1),
                        agent=agent))
    assert cond(p, "Degraded") == ("True", "AgentUnhealthy")
    assert p.status is not None
    degraded = p.status.condition("Degraded")
    assert degraded is not None and "ANTHROPIC_AUTH_TOKEN" in degraded.message


def test_stale_heartbeat() -> None:
    w = ws()
    obs = Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1),
                   agent=registered(1))
    later = T0 + timedelta(seconds=1 + SETTINGS.heartbeat_ttl_seconds + 1)
    p = run(w, obs, now=later)
    assert cond(p, "Degraded") == ("True", "HeartbeatStale")
    paused = run(w, replace(obs, containers=(container(w, 1, state="paused"),)), now=later)
    assert cond(paused, "Degraded") == ("True", "HeartbeatStale")
    assert paused.action == "none"


def test_heartbeat_of_old_generation_does_not_count() -> None:
    w = ws()
    p = run(w, Observed(containers=(container(w, 2),), tokens=ObservedTokens(2, None, 2),
                        agent=registered(1)))
    assert cond(p, "Ready")[0] == "False"
    assert cond(p, "Progressing")[0] == "True"


def test_last_transition_time_moves_only_on_flip() -> None:
    w = ws()
    obs = Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1),
                   agent=registered(1))
    first = run(w, obs)
    second = run(w, obs, previous=first.status, now=T0 + timedelta(seconds=5))
    assert first.status is not None and second.status is not None
    assert first.status.conditions == second.status.conditions
    assert second.events == ()


def test_crash_loop_backs_off_with_named_reason() -> None:
    w = ws()
    dead = container(w, 4, state="exited", exit_code=3)
    obs = Observed(containers=(dead,), tokens=ObservedTokens(4, None, 4), recent_crashes=3,
                   last_crash_at=T0)
    p = run(w, obs, now=T0 + timedelta(seconds=2))
    assert p.ops == () and cond(p, "Degraded") == ("True", "CrashLooping")
    assert p.requeue_after is not None and 7 < p.requeue_after <= 8
    later = run(w, obs, now=T0 + timedelta(seconds=11))
    assert later.recreate_reason == RecreateReason.CONTAINER_EXITED


def test_a_container_that_died_with_the_engine_is_recreated_at_once_not_a_crash() -> None:
    """Every container dies when dockerd restarts: that is no crash of the agent, so no
    crash-loop back-off however many engine restarts there were."""
    w = ws()
    dead = container(w, 4, state="exited", exit_code=143,
                     finished_at=T0 - timedelta(seconds=20))
    outage = (T0 - timedelta(seconds=10), T0 - timedelta(seconds=1))  # lost, back
    obs = Observed(containers=(dead,), tokens=ObservedTokens(4, None, 4), recent_crashes=3,
                   last_crash_at=T0, engine_outages=(outage,))
    p = run(w, obs, now=T0 + timedelta(seconds=2))
    assert p.recreate_reason == RecreateReason.ENGINE_RESTARTED
    assert "CreateContainer" in kinds(p) and cond(p, "Degraded")[1] != "CrashLooping"
    assert p.ops[0] == CaptureDiagnostics("c4", "EngineRestarted")
    # Outside the outage (and its grace before it) the same death is a crash.
    for finished in (T0 - timedelta(seconds=45), T0 + timedelta(seconds=1)):
        crashed = replace(obs, containers=(replace(dead, finished_at=finished),))
        assert run(w, crashed, now=T0 + timedelta(seconds=2)).ops == ()  # backing off
    oom = replace(obs, containers=(replace(dead, oom_killed=True),))
    assert run(w, oom, now=T0 + timedelta(seconds=2)).ops == ()  # an OOM is the agent's


def test_restart_context_delivered_once_after_reregistration() -> None:
    w = ws()
    obs = Observed(containers=(container(w, 2),), tokens=ObservedTokens(2, None, 2),
                   agent=registered(2))
    previous = WorkspaceStatus(token_generation=2, restart_count=1,
                               last_recreate_reason="RestartRequested")
    p = run(w, obs, previous=previous)
    assert p.action == "deliver"
    op = p.ops[-1]
    assert isinstance(op, DeliverRestartContext) and op.generation == 2
    assert "RestartRequested" in op.message
    done = previous.model_copy(update={"restart_context_generation": 2})
    assert run(w, obs, previous=done).ops == ()


# ------------------------------------------------------------------ health acted on


def _beating(w: Workspace, last_beat: datetime, state: str = "running", gen: int = 1,
             **kw: Any) -> Observed:
    """A registered agent of container gen (started at T0) whose last heartbeat was then."""
    return Observed(containers=(container(w, gen, state=state),),
                    tokens=ObservedTokens(gen, None, gen),
                    agent=registered(gen, at=last_beat), **kw)


@pytest.mark.parametrize("state", ["running", "paused"])
def test_a_stale_heartbeat_within_the_liveness_timeout_is_reported_not_acted_on(
        state: str) -> None:
    w = ws(livenessTimeoutSeconds=60)
    beat = T0 + timedelta(seconds=1)
    p = run(w, _beating(w, beat, state), now=beat + timedelta(seconds=59))
    assert cond(p, "Degraded") == ("True", "HeartbeatStale")
    assert p.ops == () and p.recreate_reason is None
    # ... and the planner comes back when the timeout passes, not at the next resync.
    assert p.requeue_after is not None and 1.0 <= p.requeue_after <= 1.1


@pytest.mark.parametrize("state", ["running", "paused"])
def test_silent_past_the_liveness_timeout_is_recreated_as_liveness_failed(state: str) -> None:
    """A docker-paused container counts: frozen past the timeout, it serves nothing."""
    w = ws(livenessTimeoutSeconds=60)
    beat = T0 + timedelta(seconds=1)
    previous = WorkspaceStatus(token_generation=1, restart_count=0)
    p = run(w, _beating(w, beat, state), previous=previous,
            now=beat + timedelta(seconds=61))
    assert p.action == "recreate" and p.recreate_reason == RecreateReason.LIVENESS_FAILED
    assert p.ops[0] == CaptureDiagnostics("c1", "LivenessFailed")
    names = kinds(p)
    assert names.index("ActivateToken") < names.index("StopContainer") \
        < names.index("RemoveContainer") < names.index("StartContainer")
    assert p.status is not None and p.status.last_recreate_reason == "LivenessFailed"
    assert p.status.restart_count == 1 and p.status.token_generation == 2
    assert [(e.type, e.reason) for e in p.events] == [
        ("Warning", "LivenessFailed"), ("Normal", "Recreating")]
    assert "not heard from for 61s (livenessTimeoutSeconds 60)" in p.events[0].message


def test_the_liveness_timeout_is_never_shorter_than_the_heartbeat_ttl() -> None:
    w = ws(livenessTimeoutSeconds=10)  # under the default TTL of 3 x 5 s
    beat = T0 + timedelta(seconds=1)
    assert SETTINGS.heartbeat_ttl_seconds == 15
    fresh = run(w, _beating(w, beat), now=beat + timedelta(seconds=12))
    assert fresh.ops == () and cond(fresh, "Ready")[0] == "True"
    assert run(w, _beating(w, beat), now=beat + timedelta(seconds=16)).recreate_reason \
        == RecreateReason.LIVENESS_FAILED


def test_a_liveness_failure_within_the_crash_loop_back_off_waits() -> None:
    w = ws(livenessTimeoutSeconds=60)
    beat = T0 + timedelta(seconds=1)
    now = beat + timedelta(seconds=70)
    looping = _beating(w, beat, recent_crashes=3, last_crash_at=now - timedelta(seconds=4))
    p = run(w, looping, now=now)
    assert p.ops == () and p.recreate_reason is None
    assert cond(p, "Degraded") == ("True", "CrashLooping")
    assert p.status is not None and p.status.phase == "Degraded"
    degraded = p.status.condition("Degraded")
    assert degraded is not None and "next recreate in 6s" in degraded.message
    assert p.requeue_after is not None and 5.9 <= p.requeue_after <= 6.1
    later = run(w, looping, now=now + timedelta(seconds=6.1))
    assert later.recreate_reason == RecreateReason.LIVENESS_FAILED


def test_a_paused_workspace_is_never_recreated_for_silence() -> None:
    w = ws(paused=True, livenessTimeoutSeconds=10, startupTimeoutSeconds=1)
    for state in ("running", "paused"):
        p = run(w, _beating(w, T0, state), now=T0 + timedelta(hours=1))
        assert p.recreate_reason is None and "CreateContainer" not in kinds(p)
        assert kinds(p) == ["StopContainer"]
        assert p.status is not None and p.status.phase == "Stopped"


def test_silence_while_the_controller_could_not_hear_is_no_liveness_failure() -> None:
    """A controller down (or its database) for longer than the timeout must not
    recreate every workspace when it comes back: time counts from when it could hear."""
    w = ws(livenessTimeoutSeconds=60)
    beat = T0 + timedelta(seconds=1)
    back = beat + timedelta(minutes=10)
    obs = _beating(w, beat, heartbeats_since=back)
    p = run(w, obs, now=back + timedelta(seconds=5))
    assert p.ops == () and cond(p, "Degraded") == ("True", "HeartbeatStale")
    assert p.requeue_after is not None and 55 <= p.requeue_after <= 55.1
    assert run(w, obs, now=back + timedelta(seconds=61)).recreate_reason \
        == RecreateReason.LIVENESS_FAILED
    never = Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1),
                     heartbeats_since=back)  # never registered: startup counts from then too
    assert run(w, never, now=back + timedelta(seconds=5)).ops == ()
    assert run(w, never, now=back + timedelta(seconds=181)).recreate_reason \
        == RecreateReason.STARTUP_TIMEOUT


def test_a_refused_register_is_a_sign_of_life_not_a_startup_timeout() -> None:
    w = ws(startupTimeoutSeconds=10, livenessTimeoutSeconds=60)
    marker = RegisterFailure(at=T0 + timedelta(seconds=50), class_="missing_url")
    obs = Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1),
                   agent=ObservedAgent(register_failure=marker))
    p = run(w, obs, now=T0 + timedelta(seconds=60))
    assert p.ops == () and cond(p, "Degraded") == ("True", "RegisterFailed")
    assert run(w, obs, now=T0 + timedelta(seconds=111)).recreate_reason \
        == RecreateReason.LIVENESS_FAILED


def test_a_startup_timeout_recreates_once_then_stays_degraded_with_back_off() -> None:
    w = ws(startupTimeoutSeconds=30)
    first = Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1))
    p = run(w, first, now=T0 + timedelta(seconds=31))
    assert p.recreate_reason == RecreateReason.STARTUP_TIMEOUT
    assert p.ops[0] == CaptureDiagnostics("c1", "StartupTimeout")
    assert p.status is not None and p.status.token_generation == 2
    # Its replacement (started at T0 + 32 s) never registers either: Degraded, and
    # the next recreate waits a back-off (counted like a crash loop's) instead.
    t2 = T0 + timedelta(seconds=32)
    second = Observed(containers=(container(w, 2, started=t2),),
                      tokens=ObservedTokens(2, None, 2), recent_crashes=1,
                      last_crash_at=T0 + timedelta(seconds=31))
    timed_out = t2 + timedelta(seconds=31)
    held = run(w, second, previous=p.status, now=timed_out)
    assert held.ops == () and held.recreate_reason is None
    assert cond(held, "Degraded") == ("True", "StartupTimeout")
    assert held.status is not None and held.status.phase == "Degraded"
    degraded = held.status.condition("Degraded")
    assert degraded is not None and "again after a StartupTimeout recreate" in degraded.message
    assert held.requeue_after is not None and 8.9 <= held.requeue_after <= 9.1  # 30 + 10 s
    assert [e.reason for e in held.events] == ["StartupTimeout"]  # the Warning, once
    still = run(w, second, previous=held.status, now=timed_out + timedelta(seconds=8))
    assert still.ops == () and still.events == ()
    retry = run(w, second, previous=held.status, now=timed_out + timedelta(seconds=9.1))
    assert retry.recreate_reason == RecreateReason.STARTUP_TIMEOUT
    # More failures in the crash window: the wait doubles, as for a crash loop.
    looping = replace(second, recent_crashes=4, last_crash_at=T0)
    longer = run(w, looping, previous=p.status, now=timed_out)
    assert longer.requeue_after is not None and 18.9 <= longer.requeue_after <= 19.1
    # Another recreate reason in between (a restart, a config change): once again.
    other = p.status.model_copy(update={"last_recreate_reason": "RestartRequested"})
    assert run(w, second, previous=other, now=timed_out).recreate_reason \
        == RecreateReason.STARTUP_TIMEOUT


def test_liveness_timeout_is_bounded_with_the_field_named() -> None:
    for bad in (9, 86401):
        with pytest.raises(ValueError, match="livenessTimeoutSeconds"):
            ws(livenessTimeoutSeconds=bad)
    assert ws().spec.liveness_timeout_seconds == 60


# ------------------------------------------------------------------ pause, delete, config


def test_paused_stops_and_reports_stopped() -> None:
    w = ws(paused=True)
    p = run(w, Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1)))
    assert kinds(p) == ["StopContainer"]
    assert p.status is not None and p.status.phase == "Stopped"


def test_delete_removes_everything_and_purges() -> None:
    w = ws()
    gone = w.model_copy(update={"metadata": w.metadata.model_copy(
        update={"deletion_timestamp": T0})})
    p = run(gone, Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1)))
    assert p.ops[0] == CaptureDiagnostics("c1", "Deleted")
    assert isinstance(p.ops[1], StopContainer) and isinstance(p.ops[2], RemoveContainer)
    assert p.ops[3:] == (RevokeTokens(), RemoveVolume("wsctl-default.alice-configs"),
                         PurgeWorkspace())  # spec.storage Retain: the workspace volume stays
    assert "volume wsctl-default.alice-workspace is retained" in p.events[0].message


@pytest.mark.parametrize("how", ["reclaimPolicy", "purge"])
def test_delete_with_reclaim_delete_or_purge_removes_the_storage_volume(how: str) -> None:
    w = ws(storage={"reclaimPolicy": "Delete"}) if how == "reclaimPolicy" else ws()
    meta: dict[str, Any] = {"deletion_timestamp": T0}
    if how == "purge":
        meta["annotations"] = {PURGE_ANNOTATION: "true"}
    gone = w.model_copy(update={"metadata": w.metadata.model_copy(update=meta)})
    p = run(gone, Observed())
    assert p.ops == (RevokeTokens(), RemoveVolume("wsctl-default.alice-configs"),
                     RemoveVolume("wsctl-default.alice-workspace"), PurgeWorkspace())


def test_another_mount_path_or_image_gets_its_volume_chowned_and_no_copy_up() -> None:
    for spec in ({"storage": {"mountPath": "/data"}}, {"image": "example/agent:1"}):
        p = run(ws(**spec), Observed())
        volume, create = p.ops[0], p.ops[1]
        assert isinstance(volume, EnsureVolume) and isinstance(create, CreateContainer)
        assert volume.volume.owner_image == create.spec.image
        (mount,) = [m for m in create.spec.mounts if m.source == volume.volume.name]
        assert mount.target == volume.volume.mount_path and mount.no_copy
        assert create.spec.env["WSCTL_WORKSPACE_DIR"].value == volume.volume.mount_path


def test_missing_secret_fails_with_field_and_builds_nothing() -> None:
    p = run(ws(), Observed(), secrets={})
    assert p.ops == ()
    assert p.status is not None and p.status.phase == "Failed"
    degraded = p.status.condition("Degraded")
    assert degraded is not None and degraded.reason == "RecreateFailed"
    assert "spec.llm.apiKey.secretRef" in degraded.message


@pytest.mark.parametrize("state", ["exited", "dead"])
def test_exited_states_recreate(state: str) -> None:
    w = ws()
    p = run(w, Observed(containers=(container(w, 1, state=state),),
                        tokens=ObservedTokens(1, None, 1)))
    assert p.action == "recreate"


# ------------------------------------------------------------------ token expiry and refresh


def _with_token(w: Workspace, expires: datetime | None, issued: datetime = T0,
                failure: AuthFailure | None = None) -> Observed:
    return Observed(containers=(container(w, 3),),
                    tokens=ObservedTokens(3, expires, 3, live_issued_at=issued),
                    agent=registered(3, last_auth_failure=failure))


def test_new_container_token_gets_the_spec_lifetime() -> None:
    p = run(ws(tokenExpirationSeconds=600), Observed())
    activate = next(op for op in p.ops if isinstance(op, ActivateToken))
    assert activate.expiration_seconds == 600
    assert next(op for op in run(ws(), Observed()).ops
                if isinstance(op, ActivateToken)).expiration_seconds is None


def test_token_is_refreshed_at_half_life_in_place_not_recreated() -> None:
    w = ws(tokenExpirationSeconds=600)
    now = T0 + timedelta(seconds=1)
    early = run(w, _with_token(w, now + timedelta(seconds=305)), now=now)
    assert early.action == "none" and early.ops == ()
    # Woken again just after the half-life point, not by the resync.
    assert early.requeue_after is not None and 5 < early.requeue_after <= 5.1
    due = run(w, _with_token(w, now + timedelta(seconds=299)), now=now)
    assert due.action == "refresh" and kinds(due) == ["RefreshToken"]
    op = due.ops[0]
    assert isinstance(op, RefreshToken)
    assert (op.container_id, op.generation, op.expiration_seconds) == ("c3", 3, 600)
    assert due.recreate_reason is None
    assert cond(due, "Ready") == ("True", "Registered")


def test_an_expired_token_is_refreshed_not_recreated() -> None:
    w = ws(tokenExpirationSeconds=60)
    now = T0 + timedelta(seconds=1)
    failure = AuthFailure(now, "expired_token", generation=3)
    p = run(w, _with_token(w, now - timedelta(seconds=5), issued=now - timedelta(seconds=65),
                           failure=failure), now=now)
    assert p.action == "refresh" and kinds(p) == ["RefreshToken"]


def test_expired_token_presented_after_a_refresh_issues_another() -> None:
    w = ws(tokenExpirationSeconds=60)
    now = T0 + timedelta(seconds=36)
    issued = T0 + timedelta(seconds=10)  # the current token has 34 s of 60 left ...
    later = AuthFailure(T0 + timedelta(seconds=35), "expired_token", generation=3)
    # ... but the agent still presents an expired one: the refresh never reached its file.
    p = run(w, _with_token(w, issued + timedelta(seconds=60), issued, later), now=now)
    assert kinds(p) == ["RefreshToken"]
    earlier = AuthFailure(T0 + timedelta(seconds=5), "expired_token", generation=3)
    assert run(w, _with_token(w, issued + timedelta(seconds=60), issued, earlier),
               now=now).ops == ()


def test_setting_changing_or_removing_the_lifetime_refreshes_once() -> None:
    now = T0 + timedelta(seconds=1)
    set_now = ws(tokenExpirationSeconds=600)
    assert kinds(run(set_now, _with_token(set_now, None), now=now)) == ["RefreshToken"]
    shortened = ws(tokenExpirationSeconds=60)
    assert kinds(run(shortened, _with_token(shortened, now + timedelta(seconds=500)),
                     now=now)) == ["RefreshToken"]
    removed = ws()
    p = run(removed, _with_token(removed, now + timedelta(seconds=500)), now=now)
    assert kinds(p) == ["RefreshToken"]
    assert isinstance(p.ops[0], RefreshToken) and p.ops[0].expiration_seconds is None
    assert run(removed, _with_token(removed, None), now=now).ops == ()


def test_token_of_a_container_that_is_not_running_is_not_refreshed() -> None:
    w = ws(tokenExpirationSeconds=60)
    now = T0 + timedelta(seconds=1)
    paused = Observed(containers=(container(w, 3, state="paused"),),
                      tokens=ObservedTokens(3, now, 3), agent=registered(3))
    assert "RefreshToken" not in kinds(run(w, paused, now=now))


def test_token_lifetime_is_bounded_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="tokenExpirationSeconds"):
        ws(tokenExpirationSeconds=5)


# ------------------------------------------------------------------ idle suspend / wake


def test_idle_past_the_timeout_suspends_keeping_files_and_revoking_tokens() -> None:
    w = ws(idleTimeoutSeconds=10)
    c = container(w, 1)  # started at T0
    obs = Observed(containers=(c,), tokens=ObservedTokens(1, None, 1), agent=registered(1))
    # 9 s after the start: not yet; the planner comes back at the deadline.
    early = run(w, obs, now=T0 + timedelta(seconds=9))
    assert early.action in ("none", "deliver") and early.requeue_after is not None
    assert early.requeue_after <= 1.1
    # 10 s: recorded first, then stopped and removed, then its tokens revoked.
    p = run(w, obs, previous=early.status, now=T0 + timedelta(seconds=10))
    assert p.action == "suspend"
    assert kinds(p) == ["Suspend", "StopContainer", "RemoveContainer", "RevokeTokens",
                        "CreateContainer"]
    assert isinstance(p.ops[0], Suspend) and "idle for 10s" in p.ops[0].reason
    standby = p.ops[-1]  # the next container waits created, for a fast wake
    assert isinstance(standby, CreateContainer) and standby.spec.token_generation == 2
    assert "RemoveVolume" not in kinds(p)  # the files stay
    assert p.status is not None and p.status.phase == "Suspended"
    assert cond(p, "Ready") == ("False", "Suspended")
    assert cond(p, "Degraded") == ("False", "Suspended")  # a state, not a degradation
    assert [(e.type, e.reason) for e in p.events] == [("Normal", "Suspended")]


def test_activity_or_tasks_in_progress_keep_a_workspace_awake() -> None:
    w = ws(idleTimeoutSeconds=10)
    c = container(w, 1)
    base = Observed(containers=(c,), tokens=ObservedTokens(1, None, 1), agent=registered(1))
    now = T0 + timedelta(seconds=30)
    assert run(w, base, now=now).action == "suspend"
    recent = replace(base, last_activity_at=T0 + timedelta(seconds=25))
    kept = run(w, recent, now=now)
    assert kept.action != "suspend" and kept.requeue_after is not None
    assert 4.9 <= kept.requeue_after <= 5.1  # idle at 25 + 10
    busy = replace(base, agent=registered(1, active_tasks=1))
    assert run(w, busy, now=now).action != "suspend"
    assert run(ws(), base, now=now + timedelta(days=1)).action != "suspend"  # unset: never


def test_suspended_keeps_a_standby_and_wakes_on_it_as_woken_not_a_restart() -> None:
    w = ws(idleTimeoutSeconds=10)
    suspended = Observed(suspended_at=T0, suspend_reason="requested",
                         tokens=ObservedTokens(None, None, 3))
    prev = WorkspaceStatus(token_generation=3, restart_count=2, phase="Online",
                           last_recreate_reason="ContainerExited")
    p = run(w, suspended, previous=prev)
    assert kinds(p) == ["CreateContainer"]  # the standby, never started while suspended
    assert p.status is not None and p.status.phase == "Suspended"
    assert [e.reason for e in p.events] == ["Suspended"]
    standby = container(w, 4, state="created", started=None)
    with_standby = replace(suspended, containers=(standby,))
    again = run(w, with_standby, previous=p.status)
    assert again.ops == () and again.events == ()  # steady, announced once
    # The suspension is cleared: a fresh token into the standby, then start it.
    woken = run(w, replace(with_standby, suspended_at=None), previous=p.status)
    assert woken.recreate_reason == RecreateReason.WOKEN
    assert woken.ops == (WriteToken(standby.name, 4, standby.id),  # its id: its A2A credential
                         ActivateToken(standby.name, 4, None),
                         StartContainer(standby.name))
    assert woken.status is not None
    assert woken.status.restart_count == 2  # not a restart
    assert woken.status.restart_context_generation == woken.status.token_generation == 4
    assert [e.reason for e in woken.events] == ["Woken"]
    # A spec change while suspended: the stale standby goes, a new one is made.
    changed = ws(idleTimeoutSeconds=10, env=[{"name": "MOOD", "value": "new"}])
    redo = run(changed, with_standby, previous=p.status)
    assert kinds(redo) == ["RemoveContainer", "CreateContainer"]
    # Without a standby (an old controller suspended it), a wake still creates one.
    cold = run(w, Observed(tokens=ObservedTokens(None, None, 3)), previous=p.status)
    assert cold.recreate_reason == RecreateReason.WOKEN
    assert kinds(cold)[:2] == ["EnsureVolume", "CreateContainer"]


def test_a_suspended_workspace_with_a_container_left_stops_it() -> None:
    w = ws()
    c = container(w, 2)
    p = run(w, Observed(containers=(c,), tokens=ObservedTokens(2, None, 2), suspended_at=T0,
                        suspend_reason="requested"))
    assert kinds(p) == ["StopContainer", "RemoveContainer", "RevokeTokens", "CreateContainer"]
    assert run(ws(paused=True), Observed(suspended_at=T0)).status.phase == "Stopped"  # type: ignore[union-attr]


def test_kubernetes_mode_does_not_act_on_idle_timeouts() -> None:
    w = ws(idleTimeoutSeconds=10)
    obs = Observed(containers=(container(w, 1),), tokens=ObservedTokens(1, None, 1),
                   agent=registered(1))
    later = T0 + timedelta(minutes=5)
    assert run(w, obs, now=later).action == "suspend"
    no_wake_path = replace(SETTINGS, idle_suspend=False)
    p = plan(w, project(w, SECRETS, no_wake_path), obs, None, later, no_wake_path)
    assert p.action != "suspend"
