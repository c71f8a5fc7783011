"""plan(desired, observed, now) -> Plan: what to do, and the status that follows.

Pure: no I/O, no randomness, no clock; tested as data. The executor walks
`Plan.ops` in order and carries no decision logic.

Recreate is the only way a container is built. Its op order makes a crash
between any two steps safe. The new container has a deterministic name per
token generation and is created stopped; its token file is written; then the
token's hash becomes the live one (revoking older generations); then the old
container is stopped and removed, and only then the new one starts, so there
are never two running. On the next pass a created container that holds the
live token is finished (old removed, started); one without it is a leftover
of an interrupted recreate and is removed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time

from controller.core.conditions import DegradedReason, Verdict, apply_verdict, phase_of
from controller.core.containerspec import (
    config_volume_name,
    container_spec,
    storage_volume,
    storage_volume_name,
)
from controller.core.containerspec import restarted_at_label as restarted_label
from controller.core.model import (
    PURGE_ANNOTATION,
    ConditionStatus,
    ConditionType,
    Phase,
    Workspace,
    WorkspaceStatus,
)
from controller.core.observed import Observed, ObservedContainer
from controller.core.ops import (
    ActivateToken,
    CaptureDiagnostics,
    CreateContainer,
    DeliverRestartContext,
    EnsureVolume,
    Event,
    Op,
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
from controller.core.projection import Projection, ProjectionError
from controller.core.settings import PlatformSettings

# ------------------------------------------------------------------ helpers


def _stop_and_remove(containers: list[ObservedContainer], settings: PlatformSettings
                     ) -> list[Op]:
    ops: list[Op] = []
    for c in containers:
        if c.state in ("running", "restarting", "paused"):
            ops.append(StopContainer(c.id, settings.stop_timeout_seconds))
        ops.append(RemoveContainer(c.id))
    return ops


def _next_generation(observed: Observed, previous: WorkspaceStatus) -> int:
    return 1 + max(
        [observed.tokens.max_generation, observed.tokens.live_generation or 0,
         previous.token_generation] + [c.token_generation for c in observed.containers]
    )


def _backoff_delay(crashes: int, settings: PlatformSettings) -> float:
    """The crash-loop back-off for this many crashes in the window (at the threshold or more)."""
    return min(settings.crash_backoff_seconds
               * 2.0 ** max(crashes - settings.crash_loop_threshold, 0),
               settings.crash_backoff_max_seconds)


def _crash_backoff(observed: Observed, settings: PlatformSettings, now: datetime
                   ) -> float | None:
    """Seconds to wait before recreating a crash-looping workspace, None if no wait."""
    crashes = observed.recent_crashes
    if crashes < settings.crash_loop_threshold or observed.last_crash_at is None:
        return None
    delay = _backoff_delay(crashes, settings)
    remaining = (observed.last_crash_at + timedelta(seconds=delay) - now).total_seconds()
    return remaining if remaining > 0 else None


PROBE_READY = "ProbeSucceeded"
RUNNING_READY = "ContainerRunning"
ONLINE_MESSAGES = {PROBE_READY: "readiness probe succeeded",
                   RUNNING_READY: "container running (no readiness probe)"}


def _events_for(previous: WorkspaceStatus, status: WorkspaceStatus) -> list[Event]:
    events: list[Event] = []
    old_d = previous.condition(ConditionType.DEGRADED)
    new_d = status.condition(ConditionType.DEGRADED)
    if new_d is not None and new_d.status == "True" and (
            old_d is None or old_d.status != "True" or old_d.reason != new_d.reason):
        events.append(Event("Warning", new_d.reason, new_d.message))
    if new_d is not None and new_d.status == "False" and old_d is not None \
            and old_d.status == "True":
        events.append(Event("Normal", "Recovered", f"no longer degraded ({old_d.reason})"))
    old_r = previous.condition(ConditionType.READY)
    new_r = status.condition(ConditionType.READY)
    if new_r is not None and new_r.status == "True" and (old_r is None or old_r.status != "True"):
        events.append(Event("Normal", "Online", ONLINE_MESSAGES.get(
            new_r.reason, "agent registered and heartbeating")))
    return events


def _status(ws: Workspace, previous: WorkspaceStatus, verdict: Verdict, now: datetime, *,
            failed: bool = False, suspended: bool = False,
            **changes: object) -> WorkspaceStatus:
    generation = ws.metadata.generation
    conditions = apply_verdict(previous.conditions, verdict, now, generation)
    base = previous.model_copy(update=changes)
    return base.model_copy(update={
        "conditions": conditions,
        "observed_generation": generation,
        "phase": phase_of(verdict, paused=ws.spec.paused, failed=failed, suspended=suspended),
    })


def _finish(ws: Workspace, previous: WorkspaceStatus, plan: Plan) -> Plan:
    assert plan.status is not None
    degraded = plan.status.condition(ConditionType.DEGRADED)
    events = tuple(_events_for(previous, plan.status)) + plan.events
    reason = degraded.reason if degraded is not None and degraded.status == "True" \
        else DegradedReason.HEALTHY.value
    return replace(plan, events=events, degraded_reason=reason)


# ------------------------------------------------------------------ the planner


def plan(ws: Workspace, projection: Projection | ProjectionError, observed: Observed,
         previous: WorkspaceStatus | None, now: datetime, settings: PlatformSettings) -> Plan:
    previous = previous or WorkspaceStatus()
    containers = sorted(observed.containers, key=lambda c: c.token_generation)

    if ws.metadata.deletion_timestamp is not None:
        return _plan_delete(ws, containers, settings)

    if ws.spec.paused:
        return _finish(ws, previous, _plan_paused(ws, containers, previous, now, settings))

    if observed.suspended_at is not None:
        return _finish(ws, previous, _plan_suspended(
            ws, projection, containers, observed, previous, now, settings,
            observed.suspend_reason or "suspended"))

    if isinstance(projection, ProjectionError):
        verdict = Verdict(
            ready=("False", "ConfigError", "cannot build the container"),
            degraded=("True", DegradedReason.RECREATE_FAILED, str(projection)),
            progressing=("False", "ConfigError", "waiting for the configuration to be fixed"),
        )
        status = _status(ws, previous, verdict, now, failed=True)
        return _finish(ws, previous, Plan("none", f"projection failed: {projection}",
                                          status=status))

    live = observed.tokens.live_generation
    current = _current(containers, projection, live)
    if current is not None:
        others = [c for c in containers if c.id != current.id]
        if _token_rejected(current, observed):
            return _finish(ws, previous, _plan_recreate(
                ws, projection, observed, previous, containers, RecreateReason.TOKEN_REJECTED,
                now, settings))
        if current.state == "created":
            # A recreate was interrupted after its token became live: finish it.
            ops = [*_stop_and_remove(others, settings), StartContainer(current.name)]
            status = _status(ws, previous, _starting_verdict("finishing an interrupted recreate"),
                             now, container_id=current.id)
            return _finish(ws, previous, Plan("resume", "finish interrupted recreate",
                                              tuple(ops), status))
        return _finish(ws, previous, _plan_steady(ws, current, others, observed, previous, now,
                                                  settings, projection))

    standby = _standby(containers, projection) if previous.phase == Phase.SUSPENDED else None
    if standby is not None:
        return _finish(ws, previous, _plan_wake(ws, standby, containers, previous, now,
                                                settings))

    reason = _recreate_reason(ws, containers, projection, live, previous, observed)
    if reason in (RecreateReason.CONTAINER_EXITED, RecreateReason.OOM_KILLED):
        wait = _crash_backoff(observed, settings, now)
        if wait is not None:
            verdict = Verdict(
                ready=("False", "ContainerExited", "container is not running"),
                degraded=("True", DegradedReason.CRASH_LOOPING,
                          f"{observed.recent_crashes} container exits in "
                          f"{settings.crash_window_seconds}s; next start in {wait:.0f}s"),
                progressing=("False", "BackOff", f"waiting {wait:.0f}s before recreating"),
            )
            status = _status(ws, previous, verdict, now)
            return _finish(ws, previous, Plan("none", "crash loop back-off", status=status,
                                              requeue_after=wait))
    return _finish(ws, previous, _plan_recreate(ws, projection, observed, previous, containers,
                                                reason, now, settings))


def _current(containers: list[ObservedContainer], projection: Projection,
             live: int | None) -> ObservedContainer | None:
    """The newest container built from this config with the live token, if usable."""
    for c in reversed(containers):
        if c.config_hash == projection.config_hash and c.token_generation == live \
                and c.state in ("running", "restarting", "paused", "created"):
            return c
    return None


def _token_rejected(c: ObservedContainer, observed: Observed) -> bool:
    failure = observed.agent.last_auth_failure
    if failure is None or c.started_at is None or failure.at < c.started_at:
        return False
    if failure.cls in ("invalid_token", "missing_token"):  # its token file is lost
        return True
    return failure.cls == "stale_token" and failure.generation == c.token_generation


ENGINE_STOP_GRACE = timedelta(seconds=30)
"""A stopping dockerd stops its containers around the time its API goes away."""


def _died_with_engine(c: ObservedContainer, observed: Observed) -> bool:
    return c.finished_at is not None and any(
        lost - ENGINE_STOP_GRACE <= c.finished_at <= back
        for lost, back in observed.engine_outages)


def _recreate_reason(ws: Workspace, containers: list[ObservedContainer],
                     projection: Projection, live: int | None,
                     previous: WorkspaceStatus, observed: Observed) -> RecreateReason:
    if not containers:
        if previous.token_generation == 0:
            return RecreateReason.CREATED
        if previous.phase == Phase.SUSPENDED:
            return RecreateReason.WOKEN
        return RecreateReason.CONTAINER_MISSING
    newest = containers[-1]
    if newest.state in ("exited", "dead"):
        if newest.config_hash != projection.config_hash:
            return (RecreateReason.RESUMED if previous.phase == "Stopped"
                    else RecreateReason.CONFIG_CHANGED)
        if newest.oom_killed:
            return RecreateReason.OOM_KILLED
        if _died_with_engine(newest, observed):
            return RecreateReason.ENGINE_RESTARTED
        return RecreateReason.CONTAINER_EXITED
    if newest.config_hash != projection.config_hash:
        if newest.restarted_at != restarted_label(ws):
            return RecreateReason.RESTART_REQUESTED
        return RecreateReason.CONFIG_CHANGED
    if newest.token_generation != live:
        if newest.state == "created":
            return RecreateReason.CONTAINER_MISSING  # leftover of an interrupted recreate
        return RecreateReason.TOKEN_REVOKED
    return RecreateReason.CONTAINER_MISSING


def _starting_verdict(message: str) -> Verdict:
    return Verdict(
        ready=("False", "ContainerStarting", message),
        degraded=("False", DegradedReason.HEALTHY, ""),
        progressing=("True", "ContainerStarting", message),
    )


def _plan_recreate(ws: Workspace, projection: Projection, observed: Observed,
                   previous: WorkspaceStatus, containers: list[ObservedContainer],
                   reason: RecreateReason, now: datetime, settings: PlatformSettings) -> Plan:
    generation = _next_generation(observed, previous)
    spec = container_spec(ws, projection, settings, generation)
    ops: list[Op] = [CaptureDiagnostics(c.id, reason.value)
                     for c in containers if c.ever_started]
    first = reason == RecreateReason.CREATED
    ops += [EnsureVolume(storage_volume(ws, settings.instance), first=first),
            CreateContainer(spec), WriteToken(spec.name, generation),
            ActivateToken(spec.name, generation, ws.spec.token_expiration_seconds)]
    ops += _stop_and_remove(containers, settings)
    ops.append(StartContainer(spec.name))
    woken = reason == RecreateReason.WOKEN
    message = f"{'creating' if first or woken else 'recreating'} container ({reason.value})"
    if woken:
        status = _woken_status(ws, previous, message, now, generation, projection.config_hash)
    else:
        status = _status(
            ws, previous, _starting_verdict(message), now,
            token_generation=generation,
            config_hash=projection.config_hash,
            container_id=None,
            restart_count=previous.restart_count + (0 if first else 1),
            last_recreate_reason=None if first else reason.value,
        )
    event = Event("Normal", "Created" if first else "Woken" if woken else "Recreating",
                  message)
    return Plan("create" if first else "recreate", reason.value, tuple(ops), status,
                events=(event,), recreate_reason=reason)


def _plan_paused(ws: Workspace, containers: list[ObservedContainer], previous: WorkspaceStatus,
                 now: datetime, settings: PlatformSettings) -> Plan:
    running = [c for c in containers if c.state in ("running", "restarting", "paused")]
    ops = [StopContainer(c.id, settings.stop_timeout_seconds) for c in running]
    verdict = Verdict(
        ready=("False", "Paused", "spec.paused is true"),
        degraded=("False", DegradedReason.STOPPED, ""),
        progressing=("False", "Paused", ""),
    )
    status = _status(ws, previous, verdict, now, container_id=None)
    return Plan("stop" if ops else "none", "paused", tuple(ops), status)


def purge_requested(ws: Workspace) -> bool:
    """Its storage goes with it: spec.storage.reclaimPolicy Delete, or a delete
    with --purge (the PURGE_ANNOTATION set before the deletion)."""
    return ws.spec.storage.reclaim_policy == "Delete" \
        or ws.metadata.annotations.get(PURGE_ANNOTATION, "").lower() == "true"


def _plan_suspended(ws: Workspace, projection: Projection | ProjectionError,
                    containers: list[ObservedContainer], observed: Observed,
                    previous: WorkspaceStatus, now: datetime, settings: PlatformSettings,
                    reason: str, *, mark: bool = False) -> Plan:
    """Suspended: nothing runs (files stay on the volume), tokens revoked. `mark`: the
    planner decided it now (idle), so the suspension is recorded first.

    The next container waits *created* (a standby, without a live token): a wake
    then writes a fresh token into it and starts it, which is Docker's start and
    little more. A spec change while suspended replaces the standby."""
    standby = _standby(containers, projection)
    ops: list[Op] = [Suspend(reason)] if mark else []
    others = [c for c in containers if c is not standby]
    ops += _stop_and_remove(others, settings)
    if any(c.ever_started for c in others) or observed.tokens.live_generation is not None:
        ops.append(RevokeTokens())
    if standby is None and isinstance(projection, Projection):
        generation = _next_generation(observed, previous)
        ops.append(CreateContainer(container_spec(ws, projection, settings, generation)))
    message = f"{reason}; a message or an exec wakes it"
    verdict = Verdict(
        ready=("False", "Suspended", message),
        degraded=("False", DegradedReason.SUSPENDED, ""),
        progressing=("False", "Suspended", ""),
    )
    status = _status(ws, previous, verdict, now, suspended=True, container_id=None)
    events = () if previous.phase == Phase.SUSPENDED else (
        Event("Normal", "Suspended", message),)
    return Plan("suspend" if ops else "none", reason, tuple(ops), status, events=events)


def _standby(containers: list[ObservedContainer],
             projection: Projection | ProjectionError) -> ObservedContainer | None:
    """The created, never started container a suspended workspace keeps for its wake
    (the newest, built from the current config)."""
    if isinstance(projection, ProjectionError):
        return None
    return next((c for c in reversed(containers)
                 if c.state == "created" and not c.ever_started
                 and c.config_hash == projection.config_hash), None)


def _woken_status(ws: Workspace, previous: WorkspaceStatus, message: str, now: datetime,
                  generation: int, config_hash: str) -> WorkspaceStatus:
    """A wake is no restart: nothing was lost (the files are on the volume), the
    restart count does not move and the agent is not told it was restarted."""
    return _status(ws, previous, _starting_verdict(message), now, token_generation=generation,
                   config_hash=config_hash, container_id=None,
                   restart_context_generation=generation)


def _plan_wake(ws: Workspace, standby: ObservedContainer, containers: list[ObservedContainer],
               previous: WorkspaceStatus, now: datetime, settings: PlatformSettings) -> Plan:
    """Wake a suspended workspace on its standby: a fresh token, then start."""
    generation = standby.token_generation
    others = [c for c in containers if c is not standby]
    ops: list[Op] = [WriteToken(standby.name, generation, standby.id),
                     ActivateToken(standby.name, generation, ws.spec.token_expiration_seconds),
                     *_stop_and_remove(others, settings), StartContainer(standby.name)]
    message = f"starting container ({RecreateReason.WOKEN.value})"
    status = _woken_status(ws, previous, message, now, generation, str(standby.config_hash))
    return Plan("recreate", RecreateReason.WOKEN.value, tuple(ops), status,
                events=(Event("Normal", "Woken", message),),
                recreate_reason=RecreateReason.WOKEN)


def _idle_deadline(ws: Workspace, c: ObservedContainer, observed: Observed,
                   settings: PlatformSettings) -> datetime | None:
    """When the workspace has been idle for spec.idleTimeoutSeconds (None: never).
    Idle counts from the newest activity or the container's start, whichever is
    later; an agent that reports tasks in progress is not idle."""
    timeout = ws.spec.idle_timeout_seconds
    if timeout is None or not settings.idle_suspend or c.state != "running" \
            or observed.agent.active_tasks:
        return None
    since = max((t for t in (observed.last_activity_at, c.started_at) if t is not None),
                default=None)
    return None if since is None else since + timedelta(seconds=timeout)


def _plan_delete(ws: Workspace, containers: list[ObservedContainer],
                 settings: PlatformSettings) -> Plan:
    ops: list[Op] = [CaptureDiagnostics(c.id, "Deleted") for c in containers if c.running]
    ops += _stop_and_remove(containers, settings)
    ops += [RevokeTokens(), RemoveVolume(config_volume_name(ws.key.id, settings.instance))]
    storage = storage_volume_name(ws.key.id, settings.instance)
    if purge_requested(ws):
        ops.append(RemoveVolume(storage))
        kept = f"; removing volume {storage}"
    else:
        kept = f"; volume {storage} is retained (delete with --purge to remove it)"
    ops.append(PurgeWorkspace())
    return Plan("delete", "deletion requested", tuple(ops),
                events=(Event("Normal", "Deleting",
                              "removing container and revoking tokens" + kept),))


def _plan_steady(ws: Workspace, c: ObservedContainer, others: list[ObservedContainer],
                 observed: Observed, previous: WorkspaceStatus, now: datetime,
                 settings: PlatformSettings, projection: Projection) -> Plan:
    idle_at = _idle_deadline(ws, c, observed, settings)
    if idle_at is not None and now >= idle_at:
        return _plan_suspended(
            ws, projection, [*others, c], observed, previous, now, settings,
            f"idle for {ws.spec.idle_timeout_seconds}s (spec.idleTimeoutSeconds)", mark=True)
    health = _probe_health if ws.spec.agent.protocol == "none" else _health
    verdict, requeue, act = health(ws, c, observed, previous, now, settings)
    verdict, until_tomorrow = _budget(ws, observed, verdict, now)
    if until_tomorrow is not None:
        requeue = until_tomorrow if requeue is None else min(requeue, until_tomorrow)
    if act is not None:  # the agent is not heard from: replace its container
        why, detail = act
        recreate = _plan_recreate(ws, projection, observed, previous, [*others, c], why, now,
                                  settings)
        return replace(recreate, events=(Event("Warning", why.value, detail),
                                         *recreate.events))
    if idle_at is not None:
        until_idle = (idle_at - now).total_seconds() + 0.05
        requeue = until_idle if requeue is None else min(requeue, until_idle)
    ops: list[Op] = _stop_and_remove(others, settings)
    marker = observed.agent.register_failure
    last_failure = previous.last_register_failure if marker is None else marker
    status = _status(ws, previous, verdict, now, container_id=c.id,
                     token_generation=c.token_generation, config_hash=c.config_hash,
                     last_register_failure=last_failure)
    action, reason = ("cleanup", "remove stray containers") if ops else ("none", "in sync")
    if (verdict.ready[0] == "True" and previous.restart_count > 0
            and ws.spec.agent.protocol == "wsctl"  # a foreign agent is not sent it
            and previous.restart_context_generation != c.token_generation):
        ops.append(DeliverRestartContext(c.token_generation, _restart_context(previous, c)))
        action, reason = "deliver", "restart context after re-registration"
        status = status.model_copy(update={"restart_context_generation": c.token_generation})
    refresh, refresh_in = _token_refresh(ws, c, observed, now)
    if refresh is not None:
        ops.append(RefreshToken(c.id, c.token_generation, ws.spec.token_expiration_seconds))
        if action == "none":
            action, reason = "refresh", refresh
    if refresh_in is not None:
        requeue = refresh_in if requeue is None else min(requeue, refresh_in)
    return Plan(action, reason, tuple(ops), status, requeue_after=requeue)


def _budget(ws: Workspace, observed: Observed, verdict: Verdict, now: datetime
            ) -> tuple[Verdict, float | None]:
    """A healthy workspace whose LLM calls used up spec.llm.budget today (UTC) is
    Degraded BudgetExhausted (the gateway refuses its calls) until the next UTC day,
    when a reconcile is due, or a budget raise; the container is left alone."""
    budget = ws.spec.llm.budget if ws.spec.llm is not None else None
    if budget is None or observed.llm_tokens_today < budget.tokens_per_day \
            or verdict.degraded[0] == "True":
        return verdict, None
    today = now.astimezone(UTC).date()
    midnight = datetime.combine(today + timedelta(days=1), dt_time(), UTC)
    message = (f"the day's LLM budget of {budget.tokens_per_day} tokens is used up "
               f"({today.isoformat()}, UTC); the gateway refuses calls until 00:00 UTC "
               "or a budget raise (spec.llm.budget.tokensPerDay)")
    return (replace(verdict, degraded=("True", DegradedReason.BUDGET_EXHAUSTED, message)),
            (midnight - now).total_seconds() + 0.05)


def _token_refresh(ws: Workspace, c: ObservedContainer, observed: Observed, now: datetime
                   ) -> tuple[str | None, float | None]:
    """(why the running container's token must be refreshed now, or None;
    seconds until it must be, or None).

    With spec.tokenExpirationSeconds the token is refreshed at half its
    lifetime, in place; the container is not recreated.
    """
    if c.state != "running":
        return None, None
    lifetime = ws.spec.token_expiration_seconds
    expires = observed.tokens.live_expires_at
    if lifetime is None:
        return ("token expiration removed" if expires is not None else None), None
    if expires is None:
        return "token expiration set", None
    remaining = (expires - now).total_seconds()
    if remaining > lifetime + 1:
        return "token expiration shortened", None
    if remaining <= lifetime / 2:
        return f"token expires in {max(remaining, 0):.0f}s", None
    failure = observed.agent.last_auth_failure
    issued = observed.tokens.live_issued_at
    if (failure is not None and failure.cls == "expired_token"
            and failure.generation == c.token_generation
            and issued is not None and failure.at > issued):
        # The agent still holds an expired token although a newer one was
        # issued: the new token never reached its file. Issue another.
        return "agent presented an expired token", None
    return None, remaining - lifetime / 2 + 0.05


def _restart_context(previous: WorkspaceStatus, c: ObservedContainer) -> str:
    why = previous.last_recreate_reason or "unknown"
    return (f"[system:restart-context] This workspace's container was recreated "
            f"(reason: {why}; restart #{previous.restart_count}; "
            f"token generation {c.token_generation}). Earlier in-memory state is gone; "
            "your configuration and credentials were re-projected.")


def liveness_timeout(ws: Workspace, settings: PlatformSettings) -> float:
    """spec.livenessTimeoutSeconds, never below the heartbeat TTL: an agent whose last
    heartbeat is still fresh (Ready) is never recreated for silence."""
    return max(float(ws.spec.liveness_timeout_seconds), settings.heartbeat_ttl_seconds)


def _health_action(ws: Workspace, c: ObservedContainer, observed: Observed,
                   previous: WorkspaceStatus, now: datetime, settings: PlatformSettings, *,
                   started: datetime, life: datetime | None, never_up: str | None = None
                   ) -> tuple[tuple[RecreateReason, str] | None, float | None,
                              tuple[str, str] | None]:
    """What is acted on (docs/design.md section 5, "Health acted on").

    An agent never heard from within startupTimeoutSeconds of its container's start
    (StartupTimeout), or not heard from for livenessTimeoutSeconds since it last was
    (LivenessFailed), has its container replaced; a docker-paused container counts,
    it serves nothing. Time counts only from `observed.heartbeats_since`: silence
    while the controller or its database was down is no evidence. Both recreates are
    crashes for the crash-loop back-off; a replacement of a StartupTimeout recreate
    that times out too waits a back-off as well (once, then with back-off).

    Returns ((the reason to recreate now, why) or None; seconds until that is due,
    for a requeue, or None; (Degraded reason, message) while a due recreate waits out
    a back-off, or None). `life`: the agent's last sign of life since `started`;
    `never_up`: what a startup timeout says instead of "agent did not register".
    """
    heard_from = max(started, observed.heartbeats_since or started)
    if life is None:
        reason = RecreateReason.STARTUP_TIMEOUT
        due = heard_from + timedelta(seconds=ws.spec.startup_timeout_seconds)
        what = never_up or f"agent did not register within {ws.spec.startup_timeout_seconds}s"
    else:
        reason = RecreateReason.LIVENESS_FAILED
        timeout = liveness_timeout(ws, settings)
        due = max(life, heard_from) + timedelta(seconds=timeout)
        what = (f"agent not heard from for {(now - life).total_seconds():.0f}s "
                f"(livenessTimeoutSeconds {timeout:.0f})")
    if now <= due:
        return None, (due - now).total_seconds() + 0.05, None
    wait = _crash_backoff(observed, settings, now)
    if wait is not None:
        return None, wait, (DegradedReason.CRASH_LOOPING.value,
                            f"{what}; {observed.recent_crashes} failures in "
                            f"{settings.crash_window_seconds}s; next recreate in {wait:.0f}s")
    if reason == RecreateReason.STARTUP_TIMEOUT \
            and previous.last_recreate_reason == RecreateReason.STARTUP_TIMEOUT.value \
            and previous.token_generation == c.token_generation:
        # This container replaced one that timed out, and timed out too: back off.
        delay = _backoff_delay(max(observed.recent_crashes, settings.crash_loop_threshold),
                               settings)
        remaining = (due + timedelta(seconds=delay) - now).total_seconds()
        if remaining > 0:
            return None, remaining, (DegradedReason.STARTUP_TIMEOUT.value,
                                     f"{what}, again after a StartupTimeout recreate; "
                                     f"next recreate in {remaining:.0f}s")
    return (reason, what), None, None


def _health(ws: Workspace, c: ObservedContainer, observed: Observed,
            previous: WorkspaceStatus, now: datetime, settings: PlatformSettings
            ) -> tuple[Verdict, float | None, tuple[RecreateReason, str] | None]:
    """(the conditions, seconds until they may change, (reason, why) to recreate now)."""
    agent = observed.agent
    started = c.started_at or c.created_at or now
    deadline = started + timedelta(seconds=ws.spec.startup_timeout_seconds)
    ttl = timedelta(seconds=settings.heartbeat_ttl_seconds)

    registered = (agent.registered_at is not None and agent.registered_at >= started
                  and agent.registered_generation == c.token_generation)
    beat = (agent.last_heartbeat_at if agent.last_heartbeat_at is not None
            and agent.last_heartbeat_at >= started
            and agent.heartbeat_generation == c.token_generation else None)
    seen_at = max([t for t in (agent.registered_at if registered else None, beat) if t],
                  default=None)
    marker = agent.register_failure if agent.register_failure is not None \
        and agent.register_failure.at >= started else None
    fresh = seen_at is not None and now - seen_at <= ttl
    unhealthy = beat is not None and agent.heartbeat_status == "unhealthy"

    requeue: list[float] = []
    if seen_at is None and now <= deadline:
        requeue.append((deadline - now).total_seconds() + 0.05)
    if fresh and seen_at is not None:
        requeue.append((seen_at + ttl - now).total_seconds() + 0.05)
    life = max([t for t in (seen_at, marker.at if marker is not None else None) if t],
               default=None)  # a refused register is a sign of life too
    act, act_in, held = _health_action(ws, c, observed, previous, now, settings,
                                       started=started, life=life)
    if act_in is not None:
        requeue.append(act_in)

    degraded: tuple[ConditionStatus, str, str]
    if marker is not None:
        degraded = ("True", DegradedReason.REGISTER_FAILED.value,
                    f"{marker.class_}: {marker.message}".rstrip(": "))
    elif c.state == "paused" and seen_at is not None and not fresh:
        degraded = ("True", DegradedReason.HEARTBEAT_STALE.value,
                    "container is paused; no heartbeat for "
                    f"{(now - seen_at).total_seconds():.0f}s")
    elif seen_at is None and now > deadline:
        degraded = ("True", DegradedReason.STARTUP_TIMEOUT.value,
                    f"agent did not register within {ws.spec.startup_timeout_seconds}s")
    elif unhealthy:
        degraded = ("True", DegradedReason.AGENT_UNHEALTHY.value,
                    agent.heartbeat_error or "agent reports unhealthy")
    elif seen_at is not None and not fresh:
        degraded = ("True", DegradedReason.HEARTBEAT_STALE.value,
                    f"no heartbeat for {(now - seen_at).total_seconds():.0f}s "
                    f"(ttl {settings.heartbeat_ttl_seconds:.0f}s)")
    else:
        degraded = ("False", DegradedReason.HEALTHY.value, "")
    if held is not None:  # a recreate is due but waits out a back-off
        degraded = ("True", *held)

    left = (deadline - now).total_seconds()
    waiting = ("WaitingForRegistration", "agent has not registered yet",
               f"container running; {left:.0f}s left of startupTimeoutSeconds") \
        if seen_at is None and now <= deadline and marker is None else None
    verdict = _verdict(degraded, ("Registered" if registered else "Heartbeating")
                       if fresh else None, waiting)
    return verdict, (min(requeue) if requeue else None), act


def _verdict(degraded: tuple[ConditionStatus, str, str], ready_reason: str | None,
             waiting: tuple[str, str, str] | None) -> Verdict:
    """The conditions from Degraded: Ready=True with `ready_reason` when not degraded,
    else starting while `waiting` is (reason, Ready's message, Progressing's), else
    not ready for Degraded's reason."""
    ready: tuple[ConditionStatus, str, str]
    progressing: tuple[ConditionStatus, str, str]
    if degraded[0] == "False" and ready_reason is not None:
        ready = ("True", ready_reason, "")
        progressing = ("False", "Complete", "")
    elif waiting is not None:
        ready = ("False", waiting[0], waiting[1])
        progressing = ("True", waiting[0], waiting[2])
    else:
        ready = ("False", degraded[1], degraded[2])
        progressing = ("False", degraded[1], "")
    return Verdict(ready=ready, degraded=degraded, progressing=progressing)


def _probe_health(ws: Workspace, c: ObservedContainer, observed: Observed,
                  previous: WorkspaceStatus, now: datetime, settings: PlatformSettings
                  ) -> tuple[Verdict, float | None, tuple[RecreateReason, str] | None]:
    """`_health` for spec.agent.protocol none: the controller's probes, not heartbeats.

    Ready while spec.readinessProbe succeeds (with no readiness probe: while the
    container runs). Not ready after failureThreshold failures in a row: Degraded
    ReadinessProbeFailed once it had been ready, still starting before that, until
    startupTimeoutSeconds, when the container is recreated (StartupTimeout, as for a
    silent wsctl agent). spec.livenessProbe failing failureThreshold times in a row
    recreates the container (LivenessFailed, a crash for the back-off); readiness
    alone never does, as in Kubernetes.
    """
    readiness = ws.spec.readiness_probe
    probes = observed.probes if observed.probes is not None \
        and observed.probes.container_id == c.id else None
    started = c.started_at or c.created_at or now
    heard_from = max(started, observed.heartbeats_since or started)
    deadline = heard_from + timedelta(seconds=ws.spec.startup_timeout_seconds)
    running = c.state == "running"
    if readiness is None:
        ready_now, ever = running, True
    else:
        ready_now = running and probes is not None and probes.ready is True
        ever = probes is not None and probes.ever_ready
    detail = probes.ready_detail if probes is not None and probes.ready_detail else ""
    requeue: list[float] = []
    act: tuple[RecreateReason, str] | None = None
    held: tuple[str, str] | None = None
    if probes is not None and probes.live_failed is not None:
        what = f"livenessProbe {probes.live_failed}"
        wait = _crash_backoff(observed, settings, now)
        if wait is None:
            act = (RecreateReason.LIVENESS_FAILED, what)
        else:
            requeue.append(wait)
            held = (DegradedReason.LIVENESS_PROBE_FAILED.value,
                    f"{what}; {observed.recent_crashes} failures in "
                    f"{settings.crash_window_seconds}s; next recreate in {wait:.0f}s")
    elif not ever and readiness is not None:
        never = (f"readinessProbe {readiness.shown()} did not succeed within "
                 f"{ws.spec.startup_timeout_seconds}s" + (f" ({detail})" if detail else ""))
        act, act_in, held = _health_action(ws, c, observed, previous, now, settings,
                                           started=started, life=None, never_up=never)
        if act_in is not None:
            requeue.append(act_in)

    degraded: tuple[ConditionStatus, str, str]
    if held is not None:
        degraded = ("True", *held)
    elif c.state == "paused":
        degraded = ("True", DegradedReason.CONTAINER_PAUSED.value, "container is paused")
    elif readiness is not None and not ready_now and (ever or now > deadline):
        degraded = ("True", DegradedReason.READINESS_PROBE_FAILED.value,
                    f"readinessProbe {detail or readiness.shown() + ' has not succeeded'}"
                    if ever else
                    f"readinessProbe {readiness.shown()} did not succeed within "
                    f"{ws.spec.startup_timeout_seconds}s" + (f" ({detail})" if detail else ""))
    else:
        degraded = ("False", DegradedReason.HEALTHY.value, "")

    waiting: tuple[str, str, str] | None = None
    if degraded[0] == "False" and readiness is None:
        waiting = ("ContainerStarting", f"container is {c.state}", f"container is {c.state}")
    elif degraded[0] == "False" and readiness is not None:
        left = (deadline - now).total_seconds()
        waiting = ("WaitingForReadiness",
                   f"readinessProbe {readiness.shown()} has not succeeded yet"
                   + (f" ({detail})" if detail else ""),
                   f"container running; {left:.0f}s left of startupTimeoutSeconds")
    verdict = _verdict(degraded, (PROBE_READY if readiness is not None else RUNNING_READY)
                       if ready_now else None, waiting)
    return verdict, (min(requeue) if requeue else None), act


def plan_orphans(containers: list[ObservedContainer], known_ids: set[str],
                 settings: PlatformSettings) -> list[Op]:
    """Remove containers labelled for workspaces that do not exist."""
    orphans = [c for c in containers if c.workspace_id not in known_ids]
    return _stop_and_remove(orphans, settings)
