"""The PostgreSQL store against a real (embedded) PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from controller.adapters.postgres import (
    ConflictError,
    Migration,
    MigrationError,
    Store,
    WorkspaceTerminatingError,
    apply_migrations,
    load_migrations,
)
from controller.adapters.postgres.rows import observed_agent
from controller.core.model import (
    Condition,
    Phase,
    RegisterFailure,
    Workspace,
    WorkspaceKey,
    WorkspaceStatus,
)
from controller.core.observed import AuthFailure, ObservedAgent

pytestmark = pytest.mark.postgres

WAIT = 5.0  # seconds to wait for a notification before failing
T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def make_workspace(name: str = "alice", namespace: str = "default",
                   labels: dict[str, str] | None = None, **spec: Any) -> Workspace:
    return Workspace.model_validate({
        "apiVersion": "wsctl.dev/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
    })


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ------------------------------------------------------------------ migrations


async def test_migrations_applied_once_and_idempotent(fresh_dsn: str) -> None:
    files = load_migrations()
    assert [m.version for m in files][:1] == [1]

    first = await Store.connect(fresh_dsn)
    try:
        applied = await first.applied_migrations()
    finally:
        await first.close()
    assert [(a.version, a.name, a.checksum) for a in applied] == [
        (m.version, m.name, m.checksum) for m in files
    ]

    second = await Store.connect(fresh_dsn)
    try:
        assert await second.applied_migrations() == applied  # same rows, same applied_at
    finally:
        await second.close()

    conn = await asyncpg.connect(fresh_dsn)
    try:
        assert await apply_migrations(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(files)
    finally:
        await conn.close()


async def test_concurrent_starters_migrate_once(fresh_dsn: str) -> None:
    stores = await asyncio.gather(*(Store.connect(fresh_dsn) for _ in range(4)))
    try:
        applied = await stores[0].applied_migrations()
        assert [a.version for a in applied] == [m.version for m in load_migrations()]
    finally:
        for s in stores:
            await s.close()


async def test_changed_or_unknown_migration_is_refused(fresh_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_dsn)
    try:
        first = Migration(1, "one", "CREATE TABLE t1 (x int)")
        assert await apply_migrations(conn, [first]) == [1]
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply_migrations(conn, [Migration(1, "one", "CREATE TABLE t1 (y int)")])
        second = Migration(2, "two", "CREATE TABLE t2 (x int)")
        assert await apply_migrations(conn, [first, second]) == [2]
        with pytest.raises(MigrationError, match="does not know"):
            await apply_migrations(conn, [first])
    finally:
        await conn.close()


# ------------------------------------------------------------------ workspaces


async def test_workspace_round_trip(store: Store) -> None:
    ws = make_workspace(labels={"team": "a"}, model="MiniMax-M3",
                        env=[{"name": "LOG_LEVEL", "value": "debug"}],
                        resources={"memory": "256Mi", "cpus": "500m"})
    stored = await store.apply_workspace(ws)

    assert stored.metadata.generation == 1
    assert stored.metadata.creation_timestamp is not None
    assert stored.metadata.creation_timestamp.tzinfo is not None
    assert stored.metadata.deletion_timestamp is None
    assert stored.metadata.uid is not None and uuid.UUID(stored.metadata.uid)
    assert stored.metadata.labels == {"team": "a"}
    assert stored.spec == ws.spec
    assert stored.status is None

    got = await store.get_workspace("default", "alice")
    assert got == stored
    assert await store.get_workspace("default", "nobody") is None
    assert await store.list_workspaces() == [stored]


async def test_generation_bumps_only_when_spec_changes(store: Store) -> None:
    first = await store.apply_workspace(make_workspace(model="m1"))
    # Same spec written differently (defaults spelled out): not a change.
    same = await store.apply_workspace(
        make_workspace(model="m1", image="wsctl/agent:latest", paused=False))
    assert same.metadata.generation == 1
    assert same.metadata.resource_version == first.metadata.resource_version
    assert same.metadata.uid == first.metadata.uid

    changed = await store.apply_workspace(make_workspace(model="m2"))
    assert changed.metadata.generation == 2
    assert changed.metadata.creation_timestamp == first.metadata.creation_timestamp
    assert changed.metadata.uid == first.metadata.uid

    relabelled = await store.apply_workspace(make_workspace(model="m2", labels={"x": "y"}))
    assert relabelled.metadata.generation == 2  # metadata is not spec
    assert relabelled.metadata.labels == {"x": "y"}
    assert int(relabelled.metadata.resource_version or 0) > int(
        changed.metadata.resource_version or 0)

    restarted = await store.apply_workspace(
        make_workspace(model="m2", labels={"x": "y"}, restartedAt="2030-01-01T00:00:00Z"))
    assert restarted.metadata.generation == 3


async def test_status_write_does_not_bump_generation(store: Store) -> None:
    await store.apply_workspace(make_workspace())
    status = WorkspaceStatus(
        phase=Phase.DEGRADED,
        observed_generation=1,
        container_id="c0ffee",
        config_hash="abc",
        token_generation=4,
        restart_count=1,
        last_register_failure=RegisterFailure.model_validate(
            {"at": T0, "class": "blocked_private_url", "message": "10.0.0.1 is private"}),
        conditions=[Condition(type="Degraded", status="True", reason="RegisterFailed",
                              message="blocked_private_url", last_transition_time=T0,
                              observed_generation=1)],
    )
    assert await store.write_status("default", "alice", status)
    got = await store.get_workspace("default", "alice")
    assert got is not None
    assert got.metadata.generation == 1
    assert got.status == status

    # Re-applying the same desired state keeps status; unknown workspace -> False.
    again = await store.apply_workspace(make_workspace())
    assert again.status == status and again.metadata.generation == 1
    assert not await store.write_status("default", "ghost", status)


async def test_delete_is_requested_then_purged(store: Store) -> None:
    await store.apply_workspace(make_workspace())
    await store.insert_token("default.alice", 1, sha("t1"), "c1")
    await store.record_register("default.alice", "http://alice:8000", {"name": "a"}, 1)

    assert not await store.purge_workspace("default", "alice")  # not marked: left alone
    assert await store.request_delete("default", "alice")
    assert await store.request_delete("default", "alice")  # idempotent
    assert not await store.request_delete("default", "ghost")

    terminating = await store.get_workspace("default", "alice")
    assert terminating is not None and terminating.metadata.deletion_timestamp is not None
    with pytest.raises(WorkspaceTerminatingError):
        await store.apply_workspace(make_workspace())

    await store.append_activity("default.alice", "user", method="message/send")
    assert await store.purge_workspace("default", "alice")
    assert await store.get_workspace("default", "alice") is None
    assert await store.find_token(sha("t1")) is None
    assert await store.get_registration("default.alice") is None
    assert len(await store.list_activity("default.alice", 10)) == 1  # history is kept

    recreated = await store.apply_workspace(make_workspace())
    assert recreated.metadata.generation == 1


# ------------------------------------------------------------------ notifications


async def test_notify_on_desired_state_changes(store: Store) -> None:
    keys: asyncio.Queue[WorkspaceKey] = asyncio.Queue()
    await store.listen_workspace_changes(keys.put_nowait)

    async def next_key() -> WorkspaceKey:
        return await asyncio.wait_for(keys.get(), WAIT)

    alice, bob = WorkspaceKey("default", "alice"), WorkspaceKey("team-b", "bob")
    await store.apply_workspace(make_workspace())
    assert await next_key() == alice

    # Neither a status write nor a no-op apply notifies: the next
    # notification (delivered in commit order) is bob's.
    await store.write_status("default", "alice", WorkspaceStatus(phase=Phase.ONLINE))
    await store.apply_workspace(make_workspace())
    await store.apply_workspace(make_workspace("bob", "team-b"))
    assert await next_key() == bob

    await store.apply_workspace(make_workspace(model="changed"))
    assert await next_key() == alice
    await store.request_delete("default", "alice")
    assert await next_key() == alice
    await store.purge_workspace("default", "alice")
    assert await next_key() == alice
    assert keys.empty()


async def test_listener_reconnects_after_connection_loss(store: Store, fresh_dsn: str) -> None:
    keys: asyncio.Queue[WorkspaceKey] = asyncio.Queue()
    reconnected = asyncio.Event()
    listener = await store.listen_workspace_changes(keys.put_nowait,
                                                    on_reconnect=reconnected.set)
    pid = listener.backend_pid
    assert pid is not None

    conn = await asyncpg.connect(fresh_dsn)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()
    await asyncio.wait_for(reconnected.wait(), WAIT)
    assert listener.backend_pid not in (None, pid)

    await store.apply_workspace(make_workspace())
    assert await asyncio.wait_for(keys.get(), WAIT) == WorkspaceKey("default", "alice")
    await listener.close()
    assert not listener.connected


async def test_every_follower_shares_one_listen_connection(store: Store,
                                                            fresh_dsn: str) -> None:
    """The driver, the gateway's caches and the watches all follow changes: one LISTEN
    connection serves them all, notifications and reconnects alike."""
    firsts: asyncio.Queue[WorkspaceKey] = asyncio.Queue()
    seconds: asyncio.Queue[WorkspaceKey] = asyncio.Queue()
    reconnected = [asyncio.Event(), asyncio.Event()]
    one = await store.listen_workspace_changes(firsts.put_nowait,
                                               on_reconnect=reconnected[0].set)
    two = await store.listen_workspace_changes(seconds.put_nowait,
                                               on_reconnect=reconnected[1].set)
    assert one is two
    conn = await asyncpg.connect(fresh_dsn)
    try:
        listening = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN%'")
        assert listening == 1
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", one.backend_pid)
    finally:
        await conn.close()
    for event in reconnected:
        await asyncio.wait_for(event.wait(), WAIT)
    await store.apply_workspace(make_workspace())
    alice = WorkspaceKey("default", "alice")
    assert await asyncio.wait_for(firsts.get(), WAIT) == alice
    assert await asyncio.wait_for(seconds.get(), WAIT) == alice


# ------------------------------------------------------------------ tokens


async def test_one_live_token_per_workspace(store: Store, fresh_dsn: str) -> None:
    ws = "default.alice"
    one = await store.insert_token(ws, 1, sha("one"), "c1")
    assert one.live and one.generation == 1 and one.container_id == "c1"
    assert await store.live_token(ws) == one

    two = await store.insert_token(ws, 2, sha("two"), None)  # revokes generation 1
    live = await store.live_token(ws)
    assert live is not None and live.generation == 2 and live.token_hash == two.token_hash
    old = await store.find_token(sha("one"))
    assert old is not None and old.revoked_at is not None and not old.live
    assert await store.find_token(sha("never")) is None

    # The database itself refuses a second live token.
    with pytest.raises(ConflictError, match="tokens_one_current_per_workspace"):
        await store.insert_token(ws, 3, sha("three"), None, revoke_others=False)
    conn = await asyncpg.connect(fresh_dsn)
    try:
        with pytest.raises(asyncpg.UniqueViolationError) as caught:
            await conn.execute(
                "INSERT INTO tokens (workspace_id, generation, token_hash) VALUES ($1, 9, $2)",
                ws, sha("nine"))
        assert caught.value.constraint_name == "tokens_one_current_per_workspace"
    finally:
        await conn.close()

    with pytest.raises(ConflictError):  # generation reused
        await store.insert_token(ws, 2, sha("other"), None)
    with pytest.raises(ValueError, match="sha256"):
        await store.insert_token(ws, 4, "raw-token-value", None)

    assert await store.set_token_container(ws, 2, "c2")
    assert await store.revoke_tokens(ws, except_generation=2) == 0
    assert (await store.live_token(ws)) is not None
    assert await store.revoke_tokens(ws, except_generation=None) == 1
    assert await store.live_token(ws) is None
    revoked = await store.find_token(sha("two"))
    assert revoked is not None and revoked.container_id == "c2" and not revoked.live
    assert await store.latest_token_generation(ws) == 2
    assert await store.latest_token_generation("default.none") == 0

    # Other workspaces are independent.
    assert (await store.insert_token("default.bob", 1, sha("bob"), None)).live


async def test_token_refresh_keeps_the_generation_and_the_old_token_until_expiry(
        store: Store) -> None:
    ws = "default.alice"
    await store.apply_workspace(make_workspace())
    first = await store.insert_token(ws, 3, sha("r0"), "c3", expires_at=T0 + timedelta(minutes=1))
    seen = (await store.observe_registry(ws, T0)).tokens
    assert (seen.live_generation, seen.live_issued_at) == (3, first.created_at)
    second = await store.rotate_token(ws, 3, sha("r1"), expires_at=T0 + timedelta(minutes=2))
    assert (second.generation, second.rotation, second.container_id) == (3, 1, "c3")
    old = await store.find_token(sha("r0"))
    assert old is not None and old.superseded_at is not None and old.revoked_at is None
    assert old.usable(T0)  # an agent that has not re-read its file keeps working
    seen = (await store.observe_registry(ws, T0)).tokens
    assert (seen.live_generation, seen.live_expires_at, seen.max_generation) == (
        3, T0 + timedelta(minutes=2), 3)
    assert seen.live_issued_at == second.created_at
    third = await store.rotate_token(ws, 3, sha("r2"), expires_at=None)
    assert third.rotation == 2 and (await store.live_token(ws)) == third
    # A recreate (new generation) revokes every rotation of the old one.
    await store.insert_token(ws, 4, sha("g4"), None)
    for h in ("r0", "r1", "r2"):
        row = await store.find_token(sha(h))
        assert row is not None and row.revoked_at is not None
    with pytest.raises(ConflictError, match="not the current generation"):
        await store.rotate_token(ws, 3, sha("r3"), expires_at=None)


async def test_token_expiry_is_reported(store: Store) -> None:
    token = await store.insert_token("default.alice", 1, sha("t"), None,
                                     expires_at=T0 + timedelta(hours=1))
    assert token.usable(T0)
    assert not token.usable(T0 + timedelta(hours=2))


# ------------------------------------------------------------------ registry


async def test_register_failure_marker_rules(store: Store) -> None:
    ws = "default.alice"
    failed = await store.record_register_failure(ws, "blocked_private_url",
                                                 "10.1.2.3 is private", at=T0)
    assert failed.register_failure is not None
    assert failed.register_failure.class_ == "blocked_private_url"
    assert failed.register_failure.at == T0
    assert failed.register_failure.message == "10.1.2.3 is private"

    older = await store.record_heartbeat(ws, "healthy", at=T0 - timedelta(seconds=1))
    assert older.register_failure is not None, "an older healthy heartbeat must not clear it"

    same_time = await store.record_heartbeat(ws, "healthy", at=T0)
    assert same_time.register_failure is not None, "must be strictly newer"

    unhealthy = await store.record_heartbeat(
        ws, "unhealthy", error_detail="llm-auth: no ANTHROPIC_AUTH_TOKEN", active_tasks=0,
        uptime_seconds=12.5, at=T0 + timedelta(seconds=5))
    assert unhealthy.register_failure is not None, "an unhealthy heartbeat must not clear it"
    assert unhealthy.heartbeat_status == "unhealthy"
    assert unhealthy.heartbeat_error_detail == "llm-auth: no ANTHROPIC_AUTH_TOKEN"

    healthy = await store.record_heartbeat(ws, "healthy", active_tasks=2, uptime_seconds=20.0,
                                           at=T0 + timedelta(seconds=10))
    assert healthy.register_failure is None
    assert healthy.heartbeat_status == "healthy"
    assert healthy.last_heartbeat_at == T0 + timedelta(seconds=10)
    assert healthy.active_tasks == 2 and healthy.uptime_seconds == 20.0

    # A heartbeat delivered out of order changes nothing.
    stale = await store.record_heartbeat(ws, "unhealthy", at=T0 + timedelta(seconds=7))
    assert stale.heartbeat_status == "healthy"
    assert stale.last_heartbeat_at == T0 + timedelta(seconds=10)

    # A later failure is cleared by a successful register.
    again = await store.record_register_failure(ws, "invalid_agent_card", "no name",
                                                at=T0 + timedelta(seconds=20))
    assert again.register_failure is not None
    registered = await store.record_register(ws, "http://alice:8000", {"name": "alice"}, 1,
                                             at=T0 + timedelta(seconds=21))
    assert registered.register_failure is None
    assert registered.url == "http://alice:8000"
    assert registered.agent_card == {"name": "alice"}
    assert registered.token_generation == 1
    assert registered.registered_at == T0 + timedelta(seconds=21)
    assert await store.get_registration(ws) == registered
    assert await store.get_registration("default.nobody") is None


async def test_register_for_new_token_generation_resets_heartbeat(store: Store) -> None:
    ws = "default.alice"
    await store.record_register(ws, "http://alice:8000", {"name": "a"}, 1, at=T0)
    beat = await store.record_heartbeat(ws, "unhealthy", error_detail="boom",
                                        at=T0 + timedelta(seconds=1))
    assert beat.heartbeat_status == "unhealthy"

    same = await store.record_register(ws, "http://alice:8000", {"name": "a"}, 1,
                                       at=T0 + timedelta(seconds=2))
    assert same.heartbeat_status == "unhealthy"  # same container re-registering

    fresh = await store.record_register(ws, "http://alice:8000", {"name": "a"}, 2,
                                        at=T0 + timedelta(seconds=3))
    assert fresh.heartbeat_status is None and fresh.last_heartbeat_at is None
    assert fresh.heartbeat_error_detail is None


async def test_heartbeat_generation_and_auth_failures(store: Store) -> None:
    ws = "default.alice"
    await store.apply_workspace(make_workspace())
    beat = await store.record_heartbeat(ws, "healthy", generation=3, at=T0)
    assert beat.heartbeat_generation == 3

    await store.record_auth_failure(ws, "stale_token", 2, at=T0 + timedelta(seconds=1))
    marked = await store.get_registration(ws)
    assert marked is not None
    assert marked.auth_failure_at == T0 + timedelta(seconds=1)
    assert marked.auth_failure_class == "stale_token"
    assert marked.auth_failure_generation == 2

    # Unknown workspace ids (from unauthenticated requests) create no rows.
    await store.record_auth_failure("default.ghost", "invalid_token", None)
    await store.record_auth_failure("garbage", "invalid_token", None)
    assert [r.workspace_id for r in await store.list_registrations()] == [ws]

    registered = await store.record_register(ws, "http://alice:8000", {"name": "a"}, 4,
                                             at=T0 + timedelta(seconds=2))
    assert registered.auth_failure_at is None and registered.auth_failure_class is None
    assert registered.heartbeat_generation is None  # it described generation 3's container


async def test_crash_stats_count_recent_crash_diagnostics(store: Store) -> None:
    ws = "default.alice"
    assert await store.crash_stats(ws, T0) == (0, None)
    await store.add_diagnostics(ws, container_id="a", reason="ContainerExited",
                                captured_at=T0 - timedelta(minutes=10))  # before the window
    await store.add_diagnostics(ws, container_id="b", reason="ContainerExited",
                                captured_at=T0 + timedelta(seconds=1))
    await store.add_diagnostics(ws, container_id="c", reason="OOMKilled",
                                captured_at=T0 + timedelta(seconds=5))
    await store.add_diagnostics(ws, container_id="d", reason="ConfigChanged",
                                captured_at=T0 + timedelta(seconds=0.5))  # not a crash
    await store.add_diagnostics("default.bob", container_id="e", reason="OOMKilled",
                                captured_at=T0 + timedelta(seconds=9))  # other workspace
    assert await store.crash_stats(ws, T0) == (2, T0 + timedelta(seconds=5))


async def test_containers_replaced_for_silence_count_as_crashes(store: Store) -> None:
    """A hung agent (LivenessFailed) or one that never came up (StartupTimeout) backs
    off like a crash loop: its diagnostics count toward the crash-loop threshold."""
    ws = "default.hung"
    for i, reason in enumerate(("LivenessFailed", "StartupTimeout", "LivenessFailed")):
        await store.add_diagnostics(ws, container_id=f"h{i}", reason=reason,
                                    captured_at=T0 + timedelta(seconds=i))
    await store.add_diagnostics(ws, container_id="t", reason="TokenRejected",
                                captured_at=T0 + timedelta(seconds=9))  # not a crash
    assert await store.crash_stats(ws, T0) == (3, T0 + timedelta(seconds=2))
    seen = await store.observe_registry(ws, T0)
    assert (seen.recent_crashes, seen.last_crash_at) == (3, T0 + timedelta(seconds=2))


async def test_observe_registry_matches_the_separate_reads(store: Store) -> None:
    ws = "default.alice"
    empty = await store.observe_registry(ws, T0)
    assert (empty.agent, empty.tokens.live_generation, empty.tokens.max_generation,
            empty.recent_crashes, empty.last_crash_at, empty.containers) == (
        ObservedAgent(), None, 0, 0, None, ())

    await store.insert_token(ws, 1, "a" * 64)
    await store.insert_token(ws, 2, "b" * 64)  # revokes generation 1
    await store.record_register(ws, "http://alice:8000", {"name": "a"}, 2, at=T0)
    await store.record_heartbeat(ws, "healthy", at=T0 + timedelta(seconds=1), generation=2)
    await store.record_register_failure(ws, "blocked_private_url", "10.1.2.3 is private",
                                        at=T0 + timedelta(seconds=3))
    await store.record_auth_failure(ws, "stale_token", 1, at=T0 + timedelta(seconds=4),
                                    known=True)
    await store.add_diagnostics(ws, container_id="x", reason="ContainerExited",
                                captured_at=T0 + timedelta(seconds=2))
    await store.insert_token("default.bob", 9, "c" * 64)

    seen = await store.observe_registry(ws, T0)
    registration = await store.get_registration(ws)
    assert registration is not None and seen.agent == observed_agent(registration)
    assert seen.agent == ObservedAgent(  # every field the planner reads, from the real rows
        registered_at=T0, registered_generation=2,
        last_heartbeat_at=T0 + timedelta(seconds=1), heartbeat_generation=2,
        heartbeat_status="healthy", heartbeat_error=None,
        register_failure=RegisterFailure(at=T0 + timedelta(seconds=3),
                                         class_="blocked_private_url",
                                         message="10.1.2.3 is private"),
        last_auth_failure=AuthFailure(T0 + timedelta(seconds=4), "stale_token", 1))
    live = await store.live_token(ws)
    assert live is not None and seen.tokens.live_generation == live.generation == 2
    assert seen.tokens.max_generation == await store.latest_token_generation(ws) == 2
    assert (seen.recent_crashes, seen.last_crash_at) == await store.crash_stats(ws, T0)
    assert seen.recent_crashes == 1

    await store.revoke_tokens(ws)
    assert (await store.observe_registry(ws, T0)).tokens.live_generation is None


async def test_suspension_and_last_activity_are_observed(store: Store) -> None:
    ws = "default.alice"
    seen = await store.observe_registry(ws, T0)
    assert (seen.suspended_at, seen.suspend_reason, seen.last_activity_at) == (None, None, None)
    await store.append_activity(ws, "user", method="message/send")
    await store.append_activity("default.bob", "user", method="message/send")
    (newest,) = await store.list_activity(ws, 1)
    assert await store.suspend(ws, "idle for 10s")
    assert not await store.suspend(ws, "again")  # already: the first reason stays
    seen = await store.observe_registry(ws, T0)
    assert seen.suspended_at is not None and seen.suspend_reason == "idle for 10s"
    assert seen.last_activity_at == newest.at
    assert await store.resume(ws) and not await store.resume(ws)
    assert (await store.observe_registry(ws, T0)).suspended_at is None


# ------------------------------------------------------------------ activity


async def test_activity_never_loses_a_row_to_the_caller_string(store: Store) -> None:
    ws = "default.alice"
    workspace_uuid = uuid.uuid4()
    sources = [
        "system:restart-context",
        "user",
        "webhook:github",
        str(workspace_uuid),
        "",
        "not-a-uuid",
        "00000000-0000-0000-0000-00000000000g",
        "user:alice",
        "System:upper",
        "'; DROP TABLE activity; --",
        "nul\x00byte",
        "lone \ud800 surrogate",
        "x" * 10_000,
        "default.bob",
    ]
    ids = []
    for source in sources:
        ids.append(await store.append_activity(
            ws, source, method="message/send",
            request={"params": {"text": "hi\x00", "n": 1}}, response={"ok": True},
            status="ok"))
    assert len(set(ids)) == len(sources)

    rows = list(reversed(await store.list_activity(ws, limit=100)))
    assert [r.id for r in rows] == ids
    by_source = {r.id: r for r in rows}
    kinds = [by_source[i].source_kind for i in ids]
    assert kinds == ["system", "user", "webhook", "workspace", "other", "other", "other",
                     "other", "other", "other", "other", "other", "other", "other"]
    for row in rows:
        if row.source_kind == "workspace":
            assert row.source_id == workspace_uuid
        else:
            assert row.source_id is None
    assert rows[0].source == "system:restart-context"
    assert rows[1].source == "user"
    assert rows[2].source == "webhook:github"
    assert rows[3].source == str(workspace_uuid)
    assert rows[9].source == "'; DROP TABLE activity; --"
    assert rows[10].source == "nul\ufffdbyte"
    assert rows[12].source == "x" * 10_000
    assert rows[0].request == {"params": {"text": "hi\ufffd", "n": 1}}
    assert rows[0].response == {"ok": True}
    assert rows[0].method == "message/send" and rows[0].status == "ok"

    assert len(await store.list_activity(ws, limit=3)) == 3
    assert await store.list_activity("default.other", limit=10) == []


# ------------------------------------------------------------------ diagnostics


async def test_diagnostics_round_trip(store: Store, fresh_dsn: str) -> None:
    ws = "default.alice"
    env_names: dict[str, Any] = {"ANTHROPIC_AUTH_TOKEN": "unset", "ANTHROPIC_BASE_URL": "set",
                                 "MINIMAX_API_KEY": "set"}
    first = await store.add_diagnostics(
        ws, container_id="old", reason="Recreate", state={"Status": "exited", "ExitCode": 1},
        exit_code=1, oom_killed=False, log_tail="line 1\nline 2\x00", env_names=env_names,
        captured_at=T0)
    second = await store.add_diagnostics(
        ws, container_id="older", reason="Crash", exit_code=137, oom_killed=True,
        captured_at=T0 - timedelta(minutes=1))
    assert second > first

    latest = await store.latest_diagnostics(ws)
    assert latest is not None
    assert latest.id == first  # newest by capture time, not by insert order
    assert latest.container_id == "old"
    assert latest.env_names == env_names
    assert latest.state == {"Status": "exited", "ExitCode": 1}
    assert latest.exit_code == 1 and latest.oom_killed is False
    assert latest.log_tail == "line 1\nline 2\ufffd"
    assert latest.captured_at == T0
    assert await store.latest_diagnostics("default.none") is None

    with pytest.raises(ValueError, match="'set' or 'unset'"):
        await store.add_diagnostics(ws, container_id="c", reason="x",
                                    env_names={"MINIMAX_API_KEY": "sk-secret"})  # type: ignore[dict-item]
    conn = await asyncpg.connect(fresh_dsn)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO diagnostics (workspace_id, reason, env_names) "
                "VALUES ('default.alice', 'x', '{\"K\": \"sk-secret\"}')")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO diagnostics (workspace_id, reason, env_names) "
                "VALUES ('default.alice', 'x', '{\"K\": 1}')")
    finally:
        await conn.close()


# ------------------------------------------------------------------ secrets


async def test_secrets_round_trip_and_listing_without_values(store: Store) -> None:
    await store.set_secret("minimax", "api-key", "sk-first")
    await store.set_secret("minimax", "api-key", "sk-second")
    await store.set_secret("anthropic", "api_key.v2", "sk-ant")
    assert await store.get_secrets() == {
        ("minimax", "api-key"): "sk-second",
        ("anthropic", "api_key.v2"): "sk-ant",
    }

    listed = await store.list_secret_keys()
    assert [(n, k) for n, k, _ in listed] == [("anthropic", "api_key.v2"), ("minimax", "api-key")]
    assert all(isinstance(t, datetime) and t.tzinfo is not None for _, _, t in listed)
    assert "sk-second" not in repr(listed) and "sk-ant" not in repr(listed)

    assert await store.delete_secret("minimax", "api-key")
    assert not await store.delete_secret("minimax", "api-key")
    assert await store.get_secrets() == {("anthropic", "api_key.v2"): "sk-ant"}

    with pytest.raises(ValueError, match="invalid secret"):
        await store.set_secret("Not_DNS", "key", "v")
    with pytest.raises(ValueError, match="invalid secret"):
        await store.set_secret("ok", "bad key", "v")


# ------------------------------------------------------------------ events


async def test_concurrent_repeats_fold_into_one_event(store: Store) -> None:
    """The fold is serialised per workspace (one round trip, an advisory lock inside)."""
    ws = "default.alice"
    await asyncio.gather(*(store.add_event(ws, "Warning", "HeartbeatStale", "no beat")
                           for _ in range(20)))
    await asyncio.gather(*(store.add_event("default.bob", "Normal", "Created", f"#{i}")
                           for i in range(5)))
    (event,) = await store.list_events(ws)
    assert event.count == 20 and event.first_at <= event.at
    assert len(await store.list_events("default.bob")) == 5


async def test_events_fold_repeats(store: Store) -> None:
    ws = "default.alice"
    created = await store.add_event(ws, "Normal", "Created", "container abc", at=T0)
    failed = await store.add_event(ws, "Warning", "RegisterFailed", "blocked_private_url",
                                   at=T0 + timedelta(seconds=1))
    repeat = await store.add_event(ws, "Warning", "RegisterFailed", "blocked_private_url",
                                   at=T0 + timedelta(seconds=2))
    assert repeat.id == failed.id and repeat.count == 2
    assert repeat.first_at == T0 + timedelta(seconds=1)
    assert repeat.at == T0 + timedelta(seconds=2)

    events = await store.list_events(ws, limit=10)
    assert [(e.type, e.reason, e.count) for e in events] == [
        ("Warning", "RegisterFailed", 2), ("Normal", "Created", 1)]
    assert events[1] == created
    assert await store.list_events("default.none", 10) == []
    with pytest.raises(ValueError, match="Normal or Warning"):
        await store.add_event(ws, "Error", "X")  # type: ignore[arg-type]


async def test_recent_events_across_workspaces_oldest_first(store: Store) -> None:
    heard: list[str] = []
    store.on_event = heard.append
    try:
        for i, (ws, reason) in enumerate((("default.alice", "Created"),
                                          ("team.bob", "Created"),
                                          ("default.alice", "Recreated"),
                                          ("default.alicex", "Ready"))):
            await store.add_event(ws, "Normal", reason, at=T0 + timedelta(seconds=i))
        repeat = await store.add_event("team.bob", "Normal", "Created",
                                       at=T0 + timedelta(seconds=10))
    finally:
        store.on_event = None
    assert heard == ["default.alice", "team.bob", "default.alice", "default.alicex",
                     "team.bob"]  # each one, a repeat too: the watches' wake-up

    def shown(events: list[Any]) -> list[tuple[str, str]]:
        return [(e.workspace_id, e.reason) for e in events]

    assert shown(await store.recent_events()) == [
        ("default.alice", "Created"), ("default.alice", "Recreated"),
        ("default.alicex", "Ready"), ("team.bob", "Created")]  # the repeat moved it last
    assert shown(await store.recent_events("default")) == [
        ("default.alice", "Created"), ("default.alice", "Recreated"),
        ("default.alicex", "Ready")]
    assert shown(await store.recent_events(workspace_id="default.alice")) == [
        ("default.alice", "Created"), ("default.alice", "Recreated")]
    assert shown(await store.recent_events("default", limit=2)) == [
        ("default.alice", "Recreated"), ("default.alicex", "Ready")]  # the newest two
    later = await store.recent_events(after=T0 + timedelta(seconds=2))
    assert shown(later) == [("default.alicex", "Ready"), ("team.bob", "Created")]
    assert later[-1].id == repeat.id and later[-1].count == 2
    assert await store.recent_events("nobody") == []


async def test_a_controller_key_is_made_once_and_shared(store: Store) -> None:
    first = await store.controller_key("a2a")
    assert len(first) == 32
    other = await Store.connect(store.dsn)  # another process, or a replica
    try:
        assert await other.controller_key("a2a") == first
        assert await other.controller_key("other") not in (first, b"")
    finally:
        await other.close()
    assert await store.controller_key("a2a") == first
