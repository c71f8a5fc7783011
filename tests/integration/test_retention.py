"""Retention (`Store.prune`) against a real PostgreSQL: tables that grow with use are
bounded at the configured limits, and nothing still needed is deleted."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from controller.adapters.postgres import PRUNED_TABLES, EventRecord, Store
from controller.core.settings import Retention

pytestmark = pytest.mark.postgres

WS = "default.alice"
OTHER = "default.bob"
HOUR = timedelta(hours=1)


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def count(db: asyncpg.Connection[asyncpg.Record], table: str, workspace_id: str) -> int:
    return int(await db.fetchval(
        f"SELECT count(*) FROM {table} WHERE workspace_id = $1", workspace_id))  # noqa: S608


async def usable_hashes(db: asyncpg.Connection[asyncpg.Record], workspace_id: str) -> set[str]:
    """Tokens the registry would accept now (TokenRecord.usable)."""
    rows = await db.fetch(
        "SELECT token_hash FROM tokens WHERE workspace_id = $1 AND revoked_at IS NULL "
        "AND (expires_at IS NULL OR expires_at > now())", workspace_id)
    return {r["token_hash"] for r in rows}


async def test_token_refreshes_are_bounded_and_usable_tokens_survive(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    now = datetime.now(UTC)
    # 1,000 refreshes of one generation. A superseded token stays valid until its
    # own expiry: the last four superseded ones are still usable, the five before
    # them expired half an hour ago (within the grace period), the rest long ago.
    await store.insert_token(WS, 1, sha("t0"), "c1", expires_at=now - 2 * HOUR)
    for i in range(1, 1001):
        expires = now - 2 * HOUR if i <= 990 else now - HOUR / 2 if i <= 995 else now + HOUR
        await store.rotate_token(WS, 1, sha(f"t{i}"), expires_at=expires)
    # Another workspace: a live token and a superseded one still usable.
    await store.insert_token(OTHER, 1, sha("o0"), "c2", expires_at=now + HOUR)
    await store.rotate_token(OTHER, 1, sha("o1"), expires_at=now + 2 * HOUR)
    usable = await usable_hashes(db, WS)
    assert len(usable) == 5  # the current token and four superseded ones
    before = await count(db, "tokens", WS)
    assert before == 1001

    pruned = await store.prune(Retention())

    after = await count(db, "tokens", WS)
    assert pruned["tokens"] == 991 == before - after  # rotations 0..990
    assert after == 10
    assert await usable_hashes(db, WS) == usable
    current = await store.live_token(WS)
    assert current is not None and current.token_hash == sha("t1000")
    for i in range(991, 1001):  # expired within the grace period, or still usable
        found = await store.find_token(sha(f"t{i}"))
        assert found is not None and found.rotation == i
    assert await store.find_token(sha("t990")) is None
    assert await count(db, "tokens", OTHER) == 2
    assert await store.prune(Retention()) == dict.fromkeys(PRUNED_TABLES, 0)


async def test_revoked_tokens_go_after_the_grace_period_but_never_the_newest_row(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    for generation in range(1, 6):  # each insert revokes the one before
        await store.insert_token(WS, generation, sha(f"g{generation}"))
    await store.revoke_tokens(WS)  # paused: no live token at all
    assert await store.prune(Retention()) == dict.fromkeys(PRUNED_TABLES, 0)  # within grace
    await db.execute("UPDATE tokens SET revoked_at = revoked_at - interval '2 hours'")
    pruned = await store.prune(Retention())
    assert pruned["tokens"] == 4
    # The newest row stays: it carries the generation the next one is numbered after.
    assert await store.latest_token_generation(WS) == 5
    found = await store.find_token(sha("g5"))
    assert found is not None and found.revoked_at is not None


async def test_token_pruning_is_batched_and_capped_per_pass(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    now = datetime.now(UTC)
    await store.insert_token(WS, 1, sha("t0"), expires_at=now - 2 * HOUR)
    for i in range(1, 251):
        await store.rotate_token(WS, 1, sha(f"t{i}"),
                                 expires_at=now - 2 * HOUR if i < 250 else now + HOUR)
    policy = Retention(batch_rows=40, max_batches=3)
    assert (await store.prune(policy))["tokens"] == 120  # 3 statements of 40
    assert (await store.prune(policy))["tokens"] == 120
    assert (await store.prune(policy))["tokens"] == 10
    assert await count(db, "tokens", WS) == 1


async def test_events_are_bounded_per_workspace(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    for i in range(5000):
        await store.add_event(WS, "Normal", "Tick", f"event {i}")
    for i in range(20):
        await store.add_event(OTHER, "Warning", "Tock", f"event {i}")
    other_before = await db.fetch("SELECT * FROM events WHERE workspace_id = $1 ORDER BY id",
                                  OTHER)
    assert await count(db, "events", WS) == 5000

    pruned = await store.prune(Retention())

    assert pruned["events"] == 4000
    assert await count(db, "events", WS) == 1000
    newest = await store.list_events(WS, limit=1000)
    assert [e.message for e in newest[:1]] == ["event 4999"]
    assert newest[-1].message == "event 4000"  # the newest 1,000 are kept
    assert await db.fetch("SELECT * FROM events WHERE workspace_id = $1 ORDER BY id",
                          OTHER) == other_before
    # A repeat of the latest event still folds into it.
    again = await store.add_event(WS, "Normal", "Tick", "event 4999")
    assert again.count == 2 and await count(db, "events", WS) == 1000


async def test_activity_by_age_and_count(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    now = datetime.now(UTC)
    for _ in range(50):  # older than 30 days
        await store.append_activity(WS, "user", method="old", at=now - timedelta(days=31))
    for i in range(300):
        await store.append_activity(WS, "user", method=f"m{i}")
    await store.append_activity(OTHER, "user", method="old", at=now - timedelta(days=20))
    assert (await store.prune(Retention()))["activity"] == 50  # by age: 300 < 10,000
    assert await count(db, "activity", WS) == 300
    assert (await store.prune(Retention(activity_rows=100)))["activity"] == 200
    assert await count(db, "activity", WS) == 100
    assert [a.method for a in await store.list_activity(WS, limit=1)] == ["m299"]
    assert await count(db, "activity", OTHER) == 1
    # 0 turns the limits off.
    await store.append_activity(WS, "user", method="old", at=now - timedelta(days=400))
    assert (await store.prune(Retention(activity_days=0, activity_rows=0)))["activity"] == 0


async def test_diagnostics_keep_the_newest_and_crash_counting_is_unchanged(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    start = datetime.now(UTC) - HOUR
    for i in range(80):
        await store.add_diagnostics(WS, container_id=f"c{i}", reason="ContainerExited",
                                    captured_at=start + timedelta(seconds=i))
    await store.add_diagnostics(OTHER, container_id="x", reason="ContainerExited",
                                captured_at=start - timedelta(days=40))
    since = start + timedelta(seconds=60)
    crashes = await store.crash_stats(WS, since)
    pruned = await store.prune(Retention())
    assert pruned["diagnostics"] == 31  # 30 beyond the newest 50 of alice, bob's by age
    assert await count(db, "diagnostics", WS) == 50
    assert await count(db, "diagnostics", OTHER) == 0
    latest = await store.latest_diagnostics(WS)
    assert latest is not None and latest.container_id == "c79"
    assert await store.crash_stats(WS, since) == crashes


async def test_old_events_go_by_age_and_a_repeat_is_recorded_again(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    old = datetime.now(UTC) - timedelta(days=31)
    await store.add_event(WS, "Warning", "Crashed", "exit 1", at=old)
    assert (await store.prune(Retention()))["events"] == 1
    event = await store.add_event(WS, "Warning", "Crashed", "exit 1")
    assert event.count == 1 and event.first_at > old


async def test_a_repeat_whose_latest_event_is_pruned_meanwhile_is_recorded(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    """add_event reads the latest event, then folds into it; a retention pass may
    delete that row in between. Forced here: the row is locked while add_event reads
    it, then deleted."""
    first = await store.add_event(WS, "Warning", "Crashed", "exit 1")
    async with db.transaction():
        await db.execute("SELECT 1 FROM events WHERE id = $1 FOR UPDATE", first.id)
        adding: asyncio.Future[EventRecord] = asyncio.ensure_future(
            store.add_event(WS, "Warning", "Crashed", "exit 1"))
        for _ in range(200):  # until its update waits for the row lock
            waiting = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%wsctl_add_event%'")
            if waiting:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("add_event never waited for the row lock")
        await db.execute("DELETE FROM events WHERE id = $1", first.id)
    event = await asyncio.wait_for(adding, 5)
    assert event.id != first.id and event.count == 1
    assert await count(db, "events", WS) == 1
