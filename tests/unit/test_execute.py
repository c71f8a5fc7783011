"""The executor walks a Plan through fake ports: order, token handling, failure, stall."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from controller.adapters.postgres import TokenRecord
from controller.core import redact, tokens
from controller.core.containerspec import LABEL_WORKSPACE_UID, storage_volume
from controller.core.model import Workspace, WorkspaceKey, WorkspaceStatus
from controller.core.observed import Observed, ObservedContainer, ObservedTokens
from controller.core.ops import (
    ActivateToken,
    CreateContainer,
    DeliverRestartContext,
    EnsureVolume,
    Op,
    Plan,
    RefreshToken,
    StartContainer,
    StopContainer,
    WriteToken,
)
from controller.core.ops import Event as PlanEvent
from controller.core.plan import plan
from controller.core.projection import project
from controller.core.settings import PlatformSettings
from controller.reconcile.execute import ExecuteError, Executor
from controller.testing.debug_breaks import DebugBreaks
from tests.unit.fakes import FakeEngine, FakeStore
from tests.unit.test_plan import SECRETS, SETTINGS, T0, ws

GATEWAY = "172.18.0.1"
WS_ID = "default.alice"
NEW = "wsctl-default.alice-g2"
NEW_ID = f"id-{NEW}"


def recreate_plan(w: Workspace) -> Plan:
    """alice's running generation-1 container has an old config hash: recreate it."""
    old = ObservedContainer(id="c1", name="wsctl-default.alice-g1", workspace_id=WS_ID,
                            state="running", config_hash="old", token_generation=1,
                            started_at=T0)
    p = plan(w, project(w, SECRETS, SETTINGS),
             Observed(containers=(old,), tokens=ObservedTokens(1, None, 1)),
             WorkspaceStatus(token_generation=1), T0, SETTINGS)
    assert p.action == "recreate"
    return p


def ports(known: tuple[str, ...] = ("c1",)) -> tuple[FakeEngine, FakeStore, list[Any]]:
    calls: list[Any] = []
    return FakeEngine(calls=calls, known=set(known)), FakeStore(calls=calls), calls


async def test_recreate_runs_ops_in_plan_order() -> None:
    w = ws()
    p = recreate_plan(w)
    engine, store, calls = ports()
    await Executor(engine, store, host_gateway=GATEWAY).run(w.key, p)
    assert calls == [
        ("engine.diagnostics", "c1"),
        ("store.add_diagnostics", WS_ID, "c1", "ConfigChanged"),
        ("engine.ensure_volume", "wsctl-default.alice-workspace"),
        ("store.put_llm_credential", WS_ID, 2),  # gateway mode: before the container exists
        ("engine.create", NEW, GATEWAY),
        ("engine.put_token", NEW_ID),          # into the created container, before start
        ("store.insert_token", WS_ID, 2, NEW_ID),
        ("engine.stop", "c1", SETTINGS.stop_timeout_seconds),
        ("engine.remove", "c1"),
        ("engine.start", NEW_ID),
        *[("store.add_event", WS_ID, e.type, e.reason) for e in p.events],
    ]
    assert p.events  # the recreate announces itself
    planned = next(op.spec for op in p.ops if isinstance(op, CreateContainer))
    assert engine.containers[NEW_ID] == planned.with_llm_credential(
        engine.containers[NEW_ID].env["ANTHROPIC_AUTH_TOKEN"].value)


@pytest.mark.parametrize(("found_uid", "first", "announced"), [
    ("uid-old", True, True),     # retained from a deleted workspace: re-attached, said so
    ("uid-now", True, False),    # the same object's volume (a controller restart)
    ("uid-old", False, False),   # a later recreate of the same object: nothing new
    (None, True, False),         # created now
])
async def test_a_retained_volume_is_reattached_with_an_event(
        found_uid: str | None, first: bool, announced: bool) -> None:
    w = ws()
    w = w.model_copy(update={"metadata": w.metadata.model_copy(update={"uid": "uid-now"})})
    volume = storage_volume(w)
    engine, store, _ = ports()
    if found_uid is not None:
        engine.volumes[volume.name] = {**volume.labels, LABEL_WORKSPACE_UID: found_uid}
    await Executor(engine, store, host_gateway=GATEWAY).run(
        w.key, Plan("create", "Created", (EnsureVolume(volume, first=first),)))
    reattached = [e for e in store.events if e[2] == "VolumeReattached"]
    assert len(reattached) == (1 if announced else 0)
    if announced:
        assert "wsctl-default.alice-workspace" in reattached[0][3]
        assert "uid-old" in reattached[0][3]
    assert volume.name in engine.volumes


async def test_token_in_container_is_the_one_activated() -> None:
    w = ws()
    engine, store, _ = ports()
    await Executor(engine, store, host_gateway=GATEWAY).run(w.key, recreate_plan(w))
    token = engine.token_files[NEW_ID]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    (record,) = store.tokens
    assert record.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert (record.workspace_id, record.generation, record.container_id) == (WS_ID, 2, NEW_ID)
    assert token not in repr(store)  # only the hash is stored


async def test_gateway_mode_container_gets_a_fresh_credential_stored_only_as_its_hash() -> None:
    w = ws()
    seen = set()
    for _ in range(2):
        engine, store, _ = ports()
        await Executor(engine, store, host_gateway=GATEWAY).run(w.key, recreate_plan(w))
        env = engine.containers[NEW_ID].env
        credential = env["ANTHROPIC_AUTH_TOKEN"].value
        assert env["MINIMAX_API_KEY"].value == credential and env["MINIMAX_API_KEY"].secret
        assert len(base64.urlsafe_b64decode(credential + "=")) == 32
        assert all(SECRETS[("minimax", "api-key")] not in v.value for v in env.values())
        ((digest, stored),) = store.llm_credentials.items()
        assert digest == hashlib.sha256(credential.encode()).hexdigest()
        assert (stored.workspace_id, stored.generation, stored.provider, stored.base_url) \
            == (WS_ID, 2, "minimax", None)
        assert credential not in repr(store)
        assert credential not in redact.redact(f"x {credential} y")
        seen.add(credential)
    assert len(seen) == 2  # per generation, per run: never reused


async def test_direct_mode_mints_no_credential() -> None:
    w = ws(access="direct")
    engine, store, calls = ports()
    await Executor(engine, store, host_gateway=GATEWAY).run(w.key, recreate_plan(w))
    assert not any(c[0] == "store.put_llm_credential" for c in calls)
    assert engine.containers[NEW_ID].env["ANTHROPIC_AUTH_TOKEN"].value == \
        SECRETS[("minimax", "api-key")]


async def test_the_container_gets_its_a2a_credential_with_its_token() -> None:
    w = ws()
    key = b"k" * 32
    engine, store, _ = ports()
    await Executor(engine, store, host_gateway=GATEWAY, a2a_key=key).run(w.key,
                                                                         recreate_plan(w))
    assert engine.a2a_credentials == {
        NEW_ID: tokens.a2a_credential(key, WS_ID, 2, NEW_ID)}  # what the proxy presents
    assert engine.a2a_credentials[NEW_ID] not in redact.redact(engine.a2a_credentials[NEW_ID])


async def test_a_woken_standby_gets_the_credential_of_its_own_id() -> None:
    """The standby exists before the wake's plan: its id comes with the op, because
    the proxy makes the credential from the id it lists, never from a name."""
    w = ws()
    key = b"k" * 32
    engine, store, _ = ports(known=("c4",))
    plan_ = Plan("recreate", "Woken", (WriteToken("wsctl-default.alice-g4", 4, "c4"),))
    await Executor(engine, store, host_gateway=GATEWAY, a2a_key=key).run(w.key, plan_)
    assert engine.a2a_credentials == {"c4": tokens.a2a_credential(key, WS_ID, 4, "c4")}
    with pytest.raises(ExecuteError, match="no container id"):
        await Executor(engine, store, host_gateway=GATEWAY, a2a_key=key).run(
            w.key, Plan("recreate", "Woken", (WriteToken("wsctl-default.alice-g4", 4),)))


def test_a2a_credentials_differ_per_container_generation_workspace_and_key() -> None:
    key = b"k" * 32
    one = tokens.a2a_credential(key, WS_ID, 2, "c-one")
    assert one == tokens.a2a_credential(key, WS_ID, 2, "c-one")  # the proxy recomputes it
    others = {tokens.a2a_credential(key, WS_ID, 2, "c-two"),
              tokens.a2a_credential(key, WS_ID, 3, "c-one"),
              tokens.a2a_credential(key, "default.bob", 2, "c-one"),
              tokens.a2a_credential(b"j" * 32, WS_ID, 2, "c-one")}
    assert one not in others and len(others) == 4
    assert len(base64.urlsafe_b64decode(one + "=")) == 32


async def test_every_run_mints_a_fresh_token() -> None:
    w = ws()
    p = recreate_plan(w)
    seen = set()
    for _ in range(3):
        engine, store, _ = ports()
        await Executor(engine, store, host_gateway=GATEWAY).run(w.key, p)
        seen.add(engine.token_files[NEW_ID])
    assert len(seen) == 3


async def test_diagnostics_of_a_vanished_container_are_skipped() -> None:
    w = ws()
    engine, store, calls = ports(known=())
    await Executor(engine, store, host_gateway=GATEWAY).run(w.key, recreate_plan(w))
    assert ("engine.diagnostics", "c1") in calls
    assert store.diagnostics == []


@pytest.mark.parametrize(("method", "op_type", "done_before"), [
    ("create", CreateContainer, 4),
    ("put_token", WriteToken, 5),
    ("stop", StopContainer, 7),
    ("start", StartContainer, 9),
])
async def test_failing_op_raises_naming_it_and_stops(method: str, op_type: type,
                                                     done_before: int) -> None:
    w = ws()
    engine, store, calls = ports()
    engine.fail_on = method
    with pytest.raises(ExecuteError) as caught:
        await Executor(engine, store, host_gateway=GATEWAY).run(w.key, recreate_plan(w))
    error = caught.value
    assert isinstance(error.op, op_type)
    assert error.cause is engine.failure and error.__cause__ is engine.failure
    assert op_type.__name__ in str(error) and "default/alice" in str(error)
    assert "engine says no" in str(error)
    assert len(calls) == done_before + 1  # the failed call is the last one made
    assert calls[-1][0] == f"engine.{method}"
    assert store.events == []  # events describe a completed plan


async def test_store_failure_is_named_too() -> None:
    w = ws()
    class BrokenStore(FakeStore):
        async def insert_token(self, *args: Any, **kwargs: Any) -> TokenRecord:
            raise ConnectionError("database went away")
    engine, _, calls = ports()
    store = BrokenStore(calls=calls)
    with pytest.raises(ExecuteError, match="ActivateToken failed: database went away") as caught:
        await Executor(engine, store, host_gateway=GATEWAY).run(w.key, recreate_plan(w))
    assert isinstance(caught.value.op, ActivateToken)
    assert not any(c[0] in ("engine.stop", "engine.start") for c in calls)


async def test_after_op_sees_every_op_in_order_after_it_is_done() -> None:
    w = ws()
    engine, store, calls = ports()
    seen: list[tuple[str, int]] = []

    async def after(key: WorkspaceKey, op: Op) -> None:
        seen.append((type(op).__name__, len(calls)))

    plan_ = recreate_plan(w)
    await Executor(engine, store, host_gateway=GATEWAY, after_op=after).run(w.key, plan_)
    assert [name for name, _ in seen] == [type(op).__name__ for op in plan_.ops]
    assert all(a < b for (_, a), (_, b) in itertools.pairwise(seen))  # each after its own calls


async def test_the_stall_knob_hangs_after_that_op() -> None:
    w = ws()
    engine, store, calls = ports()
    executor = DebugBreaks(stall_after_op="ActivateToken").executor(
        Executor(engine, store, host_gateway=GATEWAY))
    run = asyncio.ensure_future(executor.run(w.key, recreate_plan(w)))
    await asyncio.wait_for(store.token_inserted.wait(), 5)
    done, _ = await asyncio.wait({run}, timeout=0.2)
    assert not done, "the run went on after the stall point"
    assert calls[-1] == ("store.insert_token", WS_ID, 2, NEW_ID)
    assert not any(c[0] in ("engine.stop", "engine.remove", "engine.start") for c in calls)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


async def test_the_stall_knob_on_an_op_not_in_the_plan_completes() -> None:
    w = ws()
    engine, store, calls = ports()
    executor = DebugBreaks(stall_after_op="PurgeWorkspace").executor(
        Executor(engine, store, host_gateway=GATEWAY))
    await asyncio.wait_for(executor.run(w.key, recreate_plan(w)), 5)
    assert calls[-1][0] == "store.add_event"


async def test_delete_plan_revokes_removes_volume_and_purges() -> None:
    w = ws()
    w = w.model_copy(update={"metadata": w.metadata.model_copy(
        update={"deletion_timestamp": T0})})
    running = ObservedContainer(id="c4", name="wsctl-default.alice-g4", workspace_id=WS_ID,
                                state="running", config_hash="h", token_generation=4,
                                started_at=T0)
    p = plan(w, project(w, SECRETS, SETTINGS), Observed(containers=(running,)), None, T0,
             PlatformSettings())
    engine, store, calls = ports(known=("c4",))
    await store.apply_workspace(w)
    await store.request_delete("default", "alice")
    await Executor(engine, store, host_gateway=GATEWAY).run(w.key, p)
    assert [c for c in calls if c[0] != "store.apply_workspace"] == [
        ("engine.diagnostics", "c4"),
        ("store.add_diagnostics", WS_ID, "c4", "Deleted"),
        ("engine.stop", "c4", SETTINGS.stop_timeout_seconds),
        ("engine.remove", "c4"),
        ("store.revoke_tokens", WS_ID),
        ("engine.remove_volume", "wsctl-default.alice-configs"),
        ("store.purge_workspace", "default", "alice"),
        ("store.add_event", WS_ID, "Normal", "Deleting"),
    ]
    assert store.workspaces == {}


async def test_restart_context_is_delivered_when_a_sender_is_set() -> None:
    w = ws()
    p = Plan("deliver", "restart context", (DeliverRestartContext(5, "you were restarted"),))
    delivered: list[tuple[str, int, str]] = []

    async def deliver(workspace_id: str, generation: int, message: str) -> None:
        delivered.append((workspace_id, generation, message))
    engine, store, calls = ports()
    await Executor(engine, store, host_gateway=GATEWAY, deliver=deliver).run(w.key, p)
    assert delivered == [(WS_ID, 5, "you were restarted")]
    await Executor(engine, store, host_gateway=GATEWAY).run(w.key, p)  # no sender: a no-op
    assert delivered == [(WS_ID, 5, "you were restarted")] and calls == []


async def test_refresh_records_the_new_token_before_writing_it_and_sets_expiry() -> None:
    """Database first: a token file the registry does not know yet would be refused."""
    w = ws()
    engine, store, calls = ports(known=("c3",))
    first = await store.insert_token(WS_ID, 3, "a" * 64, "c3")
    clock_now = T0 + timedelta(seconds=100)
    executor = Executor(engine, store, host_gateway=GATEWAY, clock=lambda: clock_now)
    calls.clear()
    await executor.run(w.key, Plan("refresh", "token expires in 5s",
                                   (RefreshToken("c3", 3, 60),)))
    assert calls == [("store.rotate_token", WS_ID, 3), ("engine.put_token", "c3")]
    token = engine.token_files["c3"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)  # the shape the agent accepts
    current = await store.live_token(WS_ID)
    assert current is not None and current.generation == 3 and current.rotation == 1
    assert current.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert current.expires_at == clock_now + timedelta(seconds=60)
    # The token it replaced is superseded, not revoked: still valid until it expires.
    old = next(t for t in store.tokens if t.token_hash == first.token_hash)
    assert old.superseded_at is not None and old.revoked_at is None


async def test_stored_diagnostics_and_events_are_redacted() -> None:
    """A container that printed its key: the stored log tail shows a hash prefix instead."""
    secret = "sk-unit-leaky-0123456789"
    redact.remember(secret)
    try:
        w = ws()
        engine, store, _ = ports(known=("c1",))
        engine.diagnostics_log_tail = f"starting with key {secret}\n"
        p = recreate_plan(w)
        p = replace(p, events=(*p.events, PlanEvent("Warning", "Test", f"saw {secret}")))
        await Executor(engine, store, host_gateway=GATEWAY).run(w.key, p)
        (diag,) = store.diagnostics
        assert secret not in diag["log_tail"] and "<redacted:" in diag["log_tail"]
        assert store.events and all(secret not in e[3] for e in store.events)
        assert any("<redacted:" in e[3] for e in store.events)
    finally:
        redact.forget_all()
