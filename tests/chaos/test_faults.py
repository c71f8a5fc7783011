"""Each fault injector on its own, against fakes: what it touches, in which order,
which Degraded it declares, and when it counts as lifted."""

from __future__ import annotations

from typing import Any

import pytest

from controller.chaos.faults import (
    FAULTS,
    OWNS_CONTROLLER,
    OWNS_ENGINE,
    OWNS_POSTGRES,
    FaultSkipped,
    available,
)
from controller.core.conditions import DegradedReason
from tests.chaos.fakes import FakeApi, FakeController, FakeEngine, context, record, view

WS = "chaos.w01"


def fleet() -> FakeEngine:
    return FakeEngine([view(WS, 1, "exited"), view(WS, 2), view("chaos.w02", 1)])


def test_every_fault_names_only_real_degraded_reasons() -> None:
    reasons = {r.value for r in DegradedReason}
    for fault in FAULTS.values():
        assert fault.summary, fault.kind
        assert fault.may_cause <= reasons, fault.kind
        assert fault.must_cause <= fault.may_cause, fault.kind
    assert FAULTS["pause"].must_cause == {"HeartbeatStale"}
    assert FAULTS["network"].must_cause == {"HeartbeatStale"}
    assert FAULTS["bad-register"].must_cause == {"RegisterFailed"}
    assert FAULTS["crash-loop"].must_cause == {"CrashLooping"}
    assert FAULTS["remove"].may_cause == frozenset()


@pytest.mark.parametrize("kind, call", [("kill", "kill"), ("stop", "stop"),
                                        ("remove", "remove")])
async def test_container_faults_hit_the_newest_running_container(kind: str, call: str) -> None:
    engine = fleet()
    ctx, clock, _ = context(engine)
    clock.now = 7.0
    plan, rec = record(kind)
    await FAULTS[kind].inject(ctx, plan, rec)
    assert [c[:2] for c in engine.calls] == [(call, f"id-{WS}-g2")]
    assert rec.before_container == f"id-{WS}-g2"
    assert rec.injected_at == rec.lifted_at == 7.0
    assert FAULTS[kind].replaced(plan) == "w01"


async def test_a_workspace_without_running_container_is_skipped() -> None:
    ctx, _, _ = context(FakeEngine([view(WS, 1, "exited")]))
    plan, rec = record("kill")
    with pytest.raises(FaultSkipped, match="no running container"):
        await FAULTS["kill"].inject(ctx, plan, rec)
    assert rec.injected_at is None


async def test_pause_outlasts_the_heartbeat_ttl_then_unpauses() -> None:
    engine = fleet()
    ctx, clock, _ = context(engine)
    plan, rec = record("pause")
    await FAULTS["pause"].inject(ctx, plan, rec)
    assert [c[0] for c in engine.calls] == ["pause", "unpause"]
    assert clock.slept == [5.0]  # TTL 3 s + 2 s
    assert rec.injected_at == 0.0 and rec.lifted_at == 5.0
    assert FAULTS["pause"].replaced(plan) is None


async def test_network_cut_reconnects_even_when_interrupted() -> None:
    engine = fleet()
    ctx, _, _ = context(engine)

    async def interrupted(seconds: float) -> None:
        raise RuntimeError("cancelled mid-fault")

    ctx.sleep = interrupted
    plan, rec = record("network")
    with pytest.raises(RuntimeError):
        await FAULTS["network"].inject(ctx, plan, rec)
    assert engine.calls == [("disconnect", "net", f"id-{WS}-g2"),
                            ("connect", "net", f"id-{WS}-g2")]


@pytest.mark.parametrize("variant, damage", [("delete", "delete_token"),
                                             ("corrupt", "corrupt_token")])
async def test_token_fault_damages_the_file_then_restarts(variant: str, damage: str) -> None:
    engine = fleet()
    ctx, _, _ = context(engine)
    plan, rec = record("token", variant=variant)
    await FAULTS["token"].inject(ctx, plan, rec)
    assert [c[0] for c in engine.calls] == [damage, "restart"]


async def test_suspend_goes_through_the_api_and_must_end_on_a_new_container() -> None:
    api = FakeApi()
    engine = fleet()
    ctx, clock, _ = context(engine, api)
    clock.now = 3.0
    plan, rec = record("suspend")
    await FAULTS["suspend"].inject(ctx, plan, rec)
    assert api.calls == [("describe", "w01"), ("suspend", "w01")] and engine.calls == []
    assert rec.before_container == f"id-{WS}-g2"
    assert rec.injected_at == rec.lifted_at == 3.0 and rec.missed is None
    assert FAULTS["suspend"].replaced(plan) == "w01"
    # Suspended is a state, not a degradation: nothing may be reported Degraded.
    assert FAULTS["suspend"].may_cause == frozenset()


@pytest.mark.parametrize("before, after, in_place", [(0, 0, True), (2, 2, True),
                                                     (0, 1, False), (2, 3, False)])
async def test_a_suspend_may_end_on_its_container_only_if_it_never_took_effect(
        before: int, after: int, in_place: bool) -> None:
    """A message between the request and the reconcile wakes the workspace before it
    stopped: the container is rightly kept, unless a suspension did happen."""
    api = FakeApi(suspensions=[before, after])
    ctx, _, _ = context(fleet(), api)
    plan, rec = record("suspend")
    await FAULTS["suspend"].inject(ctx, plan, rec)
    assert FAULTS["suspend"].may_stay and rec.suspensions_before == before
    why = await FAULTS["suspend"].stayed(ctx, plan, rec)
    assert (why is not None) == in_place, why
    assert not FAULTS["kill"].may_stay


async def test_a_suspend_the_api_did_not_take_is_missed() -> None:
    ctx, _, _ = context(fleet(), FakeApi(suspend_result="already suspended"))
    plan, rec = record("suspend")
    await FAULTS["suspend"].inject(ctx, plan, rec)
    assert rec.missed == "suspend answered 'already suspended'"


async def test_delete_reapply_waits_until_gone_then_applies_the_same_manifest() -> None:
    engine = fleet()
    deleted: list[str] = []
    api = FakeApi(exists_answers=[True, True, None])  # deleting, deleting, no answer: then 404
    ctx, clock, _ = context(engine, api)
    ctx.deleted = deleted.append
    order: list[str] = []
    api_apply = api.apply

    async def apply(objects: list[dict[str, Any]]) -> Any:
        order.append(f"apply after deleted={deleted}")
        return await api_apply(objects)

    api.apply = apply  # type: ignore[method-assign]
    slept = 0

    async def sleep(seconds: float) -> None:  # the container goes away after two polls
        nonlocal slept
        slept += 1
        clock.now += seconds
        if slept == 2:
            engine.views = [v for v in engine.views if v.workspace_id != WS]

    ctx.sleep = sleep
    plan, rec = record("delete-reapply")
    await FAULTS["delete-reapply"].inject(ctx, plan, rec)
    assert api.calls[0] == ("delete", "w01")
    assert [c for c in api.calls if c[0] == "exists"] == [("exists", "w01")] * 4
    assert order == ["apply after deleted=['w01']"]  # the run forgets, then applies
    assert api.applied == [[ctx.manifests["w01"]]]
    assert rec.before_container == f"id-{WS}-g2" and rec.missed is None
    assert rec.injected_at == 0.0 and rec.lifted_at == pytest.approx(clock.now)
    assert rec.notes and rec.notes[0].startswith("gone ")
    assert FAULTS["delete-reapply"].replaced(plan) == "w01"
    assert FAULTS["delete-reapply"].may_cause == frozenset()


async def test_a_delete_that_never_finishes_is_missed_and_not_applied_again() -> None:
    ctx, _, _ = context(fleet(), FakeApi())  # its container never goes away
    deleted: list[str] = []
    ctx.deleted = deleted.append
    plan, rec = record("delete-reapply")
    await FAULTS["delete-reapply"].inject(ctx, plan, rec)
    assert rec.missed == "w01 still there 60s after the delete"
    assert deleted == [] and ctx.api.applied == []  # type: ignore[attr-defined]


async def test_a_refused_delete_is_missed() -> None:
    api = FakeApi(delete_status=503)
    ctx, _, _ = context(fleet(), api)
    plan, rec = record("delete-reapply")
    await FAULTS["delete-reapply"].inject(ctx, plan, rec)
    assert rec.missed == "delete answered HTTP 503" and api.applied == []


@pytest.mark.parametrize("kind, env, reason", [
    ("bad-register", {"AGENT_REGISTER_PAYLOAD": "no_url"}, "RegisterFailed"),
    ("crash-loop", {"AGENT_EXIT_AFTER_SECONDS": "1"}, "CrashLooping"),
])
async def test_spec_faults_break_until_reported_then_revert(
        kind: str, env: dict[str, str], reason: str) -> None:
    api = FakeApi()
    ctx, _, waits = context(fleet(), api)
    plan, rec = record(kind, payload="no_url") if kind == "bad-register" else record(kind)
    await FAULTS[kind].inject(ctx, plan, rec)
    broken, reverted = api.applied
    extra = {e["name"]: e["value"] for e in broken[0]["spec"]["env"]}
    assert extra == {"LOG_LEVEL": "info", **env}
    assert reverted == [ctx.manifests["w01"]]
    assert ctx.manifests["w01"]["spec"]["env"] == [{"name": "LOG_LEVEL", "value": "info"}]
    assert [w[:2] for w in waits] == [("w01", reason)]
    assert rec.notes == [] and rec.lifted_at is not None


async def test_spec_fault_that_is_never_reported_is_noted_and_still_reverted() -> None:
    api = FakeApi()
    ctx, _, _ = context(fleet(), api, detected=False)
    plan, rec = record("crash-loop")
    await FAULTS["crash-loop"].inject(ctx, plan, rec)
    assert len(api.applied) == 2
    assert rec.notes == ["no CrashLooping within 60s"]


async def test_controller_kill_at_a_random_moment() -> None:
    controller = FakeController()
    ctx, clock, _ = context(fleet(), controller=controller)
    plan, rec = record("controller-kill", None, stall="none", after_ms="250")
    await FAULTS["controller-kill"].inject(ctx, plan, rec)
    assert controller.calls == [("kill", {}), ("start", {})]
    assert clock.slept == [0.25]
    assert FAULTS["controller-kill"].replaced(plan) is None


async def test_controller_kill_mid_recreate_stalls_kills_and_restarts() -> None:
    engine = fleet()
    controller = FakeController()
    ctx, _, _ = context(engine, controller=controller)

    def kill(container_id: str, sig: str = "SIGKILL") -> None:
        engine.calls.append(("kill", container_id))
        controller.log += "WARNING chaos/w01: fault injection: stalling after WriteToken\n"

    engine.kill = kill  # type: ignore[method-assign]
    plan, rec = record("controller-kill", None, stall="WriteToken", workspace="w01")
    await FAULTS["controller-kill"].inject(ctx, plan, rec)
    assert controller.calls == [("kill", {}), ("start", {"WSCTL_DEBUG_STALL_AFTER_OP":
                                                         "WriteToken"}),
                                ("kill", {}), ("start", {})]
    assert engine.calls == [("kill", f"id-{WS}-g2")]
    assert rec.notes == []
    assert FAULTS["controller-kill"].replaced(plan) == "w01"


async def test_fleet_faults_need_what_they_restart() -> None:
    ctx, _, _ = context(fleet())
    for kind in ("controller-kill", "postgres-restart", "docker-restart"):
        plan, rec = record(kind, None, stall="none")
        with pytest.raises(FaultSkipped):
            await FAULTS[kind].inject(ctx, plan, rec)


async def test_postgres_restart_is_lifted_when_the_server_is_back() -> None:
    restarted: list[bool] = []

    async def restart() -> None:
        restarted.append(True)

    ctx, _, _ = context(fleet(), restart_postgres=restart)
    plan, rec = record("postgres-restart", None)
    await FAULTS["postgres-restart"].inject(ctx, plan, rec)
    assert restarted == [True] and rec.lifted_at is not None


def test_available_fault_types_depend_on_what_the_run_owns() -> None:
    everything = {f.kind for f in available({OWNS_CONTROLLER, OWNS_POSTGRES, OWNS_ENGINE})}
    assert everything == set(FAULTS)
    attached = {f.kind for f in available(set())}
    assert attached == set(FAULTS) - {"controller-kill", "postgres-restart", "docker-restart"}
    assert [f.kind for f in available(set(), ["pause", "kill"])] == ["kill", "pause"]
    with pytest.raises(ValueError, match="unknown fault type"):
        available(set(), ["nope"])
    with pytest.raises(ValueError, match="need what this run lacks"):
        available(set(), ["controller-kill"])


def test_a_mid_recreate_controller_kill_may_also_cause_crash_looping() -> None:
    fault = FAULTS["controller-kill"]
    _, random_moment = record("controller-kill", None, stall="none", after_ms="10")
    _, mid_recreate = record("controller-kill", None, stall="WriteToken", workspace="w01")
    assert fault.causes(random_moment.plan) == {"HeartbeatStale"}
    assert fault.causes(mid_recreate.plan) == {"HeartbeatStale", "CrashLooping"}


async def test_lateral_tries_every_neighbour_the_host_and_the_proxy() -> None:
    engine = fleet()
    ctx, _, _ = context(engine)
    ctx.egress_port = 9999
    plan, rec = record("lateral")
    await FAULTS["lateral"].inject(ctx, plan, rec)
    assert engine.calls == [("probe", f"id-{WS}-g2")]
    assert rec.breaches == [] and rec.injected_at is not None
    assert "6 lateral path(s) tried, 0 reached" in rec.notes[0]
    assert FAULTS["lateral"].replaced(plan) is None and FAULTS["lateral"].may_cause == set()


async def test_lateral_reports_each_path_that_worked() -> None:
    engine = fleet()
    engine.reach = {"chaos.w02 by name": "reached",
                    "the host through the egress proxy": "reached",
                    "the host at 172.17.0.1": "refused: HTTP/1.1 403 Forbidden"}
    ctx, _, _ = context(engine)
    ctx.egress_port = 9999
    plan, rec = record("lateral")
    await FAULTS["lateral"].inject(ctx, plan, rec)
    assert [b.split(" (")[0] for b in rec.breaches] == [
        "chaos.w02 by name", "the host through the egress proxy"]
    assert "via host.docker.internal:9999" in rec.breaches[1]


def test_the_command_lines_fault_names_are_the_faults() -> None:
    from controller.chaos.kinds import FAULT_KINDS
    assert tuple(FAULTS) == FAULT_KINDS
