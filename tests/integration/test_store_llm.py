"""The LLM gateway's tables (migration 0008) against a real (embedded) PostgreSQL:
llm_credentials (only the SHA-256 of a workspace credential, one row per container
generation, revoked with the agent tokens of its generation, deleted with its
workspace, pruned after the token grace) and llm_usage (per workspace, UTC day and
provider; pruned after `Retention.llm_usage_days`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta

import asyncpg
import pytest

from controller.adapters.postgres import PRUNED_TABLES, Store, UsageRecord
from controller.core import tokens
from controller.core.settings import RETAIN_LLM_USAGE_DAYS, Retention
from controller.core.usage import Usage
from tests.integration.test_store import make_workspace, sha

pytestmark = pytest.mark.postgres

WS = "default.alice"
OTHER = "default.bob"
BASE_URL = "https://api.example.test/anthropic"
DAY = date(2030, 1, 1)


async def raw_rows(db: asyncpg.Connection[asyncpg.Record]) -> list[str]:
    """Every llm_credentials row, every column, as text."""
    return [r[0] for r in await db.fetch("SELECT to_jsonb(c)::text FROM llm_credentials c")]


async def count(db: asyncpg.Connection[asyncpg.Record], table: str,
                workspace_id: str | None = None) -> int:
    return int(await db.fetchval(
        f"SELECT count(*) FROM {table} "  # noqa: S608 - a constant table name
        "WHERE $1::text IS NULL OR workspace_id = $1", workspace_id))


async def mint(store: Store, workspace_id: str, generation: int,
               provider: str = "anthropic", base_url: str | None = BASE_URL) -> str:
    """A credential for the generation, as the executor's CreateContainer mints it."""
    credential = tokens.mint()
    await store.put_llm_credential(workspace_id, generation, tokens.digest(credential),
                                   provider, base_url)
    return credential


async def revoked(store: Store, credential: str) -> bool:
    """True when the gateway would answer stale_credential (found, revoked); False when
    it would let the credential through (found, not revoked)."""
    row = await store.find_llm_credential(tokens.digest(credential))
    assert row is not None, "credential not found (the gateway: invalid_credential)"
    return row.revoked_at is not None


def usage_key(r: UsageRecord) -> tuple[str, date, str]:
    return r.workspace_id, r.day, r.provider


def counts(r: UsageRecord) -> tuple[int, int, int, int, int, int]:
    return (r.requests, r.errors, r.input_tokens, r.output_tokens, r.cache_creation_tokens,
            r.cache_read_tokens)


# ------------------------------------------------------------------ credentials


async def test_credential_is_stored_as_its_hash_and_replaced_per_generation(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    credential = tokens.mint()
    digest = tokens.digest(credential)
    stored = await store.put_llm_credential(WS, 1, digest, "anthropic", BASE_URL)
    assert (stored.workspace_id, stored.generation, stored.provider, stored.base_url,
            stored.revoked_at, stored.expires_at) == (WS, 1, "anthropic", BASE_URL, None, None)

    # The raw row: the hash, never the credential (nor any part of it).
    rows = await raw_rows(db)
    assert len(rows) == 1
    assert digest in rows[0]
    assert credential not in rows[0] and credential[:16] not in rows[0]
    raw = await db.fetchrow("SELECT * FROM llm_credentials")
    assert raw is not None and raw["credential_hash"] == digest

    found = await store.find_llm_credential(digest)
    assert found == stored
    assert await store.find_llm_credential(tokens.digest(tokens.mint())) is None
    assert await store.find_llm_credential(credential) is None  # looked up by hash only

    # The plaintext is refused, by the store and by the table's check.
    with pytest.raises(ValueError, match="sha256"):
        await store.put_llm_credential(WS, 2, credential, "anthropic", BASE_URL)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("INSERT INTO llm_credentials (workspace_id, generation, "
                         "credential_hash, provider) VALUES ($1, 2, $2, 'anthropic')",
                         WS, credential)
    assert await count(db, "llm_credentials") == 1

    # A retried create mints again: the newer credential replaces its generation's row.
    await store.revoke_tokens(WS)
    assert await revoked(store, credential)
    again = tokens.mint()
    replaced = await store.put_llm_credential(WS, 1, tokens.digest(again), "openai", None)
    assert (replaced.generation, replaced.provider, replaced.base_url,
            replaced.revoked_at) == (1, "openai", None, None)
    assert await store.find_llm_credential(digest) is None
    assert await store.find_llm_credential(tokens.digest(again)) == replaced
    rows = await raw_rows(db)
    assert len(rows) == 1 and credential not in rows[0] and again not in rows[0]

    # Another generation, another workspace: rows of their own.
    second = await mint(store, WS, 2)
    bob = await mint(store, OTHER, 1, "minimax")
    for value, (workspace, generation, provider) in (
            (second, (WS, 2, "anthropic")), (bob, (OTHER, 1, "minimax")),
            (again, (WS, 1, "openai"))):
        row = await store.find_llm_credential(tokens.digest(value))
        assert row is not None
        assert (row.workspace_id, row.generation, row.provider) == (workspace, generation,
                                                                    provider)
    assert all(c not in row for row in await raw_rows(db) for c in (second, bob, again))


async def test_a_new_token_generation_revokes_the_older_credentials(store: Store) -> None:
    # The executor's order: CreateContainer puts the generation's credential, then
    # ActivateToken inserts its token (which revokes the generations before it).
    one = await mint(store, WS, 1)
    await store.insert_token(WS, 1, sha("t1"), "c1")
    bob = await mint(store, OTHER, 1)
    await store.insert_token(OTHER, 1, sha("b1"), "b1")
    assert not await revoked(store, one)

    two = await mint(store, WS, 2)
    assert not await revoked(store, one)  # until generation 2's token is in
    await store.insert_token(WS, 2, sha("t2"), "c2")
    assert await revoked(store, one)  # the gateway: stale_credential
    assert not await revoked(store, two)
    assert not await revoked(store, bob)  # another workspace's generations are its own

    # A token with revoke_others=False revokes no credential either.
    await store.revoke_tokens(WS)
    three = await mint(store, WS, 3)
    four = await mint(store, WS, 4)
    await store.insert_token(WS, 4, sha("t4"), "c4", revoke_others=False)
    assert not await revoked(store, three) and not await revoked(store, four)
    assert await revoked(store, two)


async def test_revoking_tokens_revokes_every_credential_of_the_workspace_only(
        store: Store) -> None:
    one = await mint(store, WS, 1)
    await store.insert_token(WS, 1, sha("t1"), "c1")
    two = await mint(store, WS, 2)  # created, token not yet in: still live
    bob = await mint(store, OTHER, 1)
    await store.insert_token(OTHER, 1, sha("b1"), "b1")

    # But a generation: that one stays.
    assert await store.revoke_tokens(WS, except_generation=2) == 1
    assert await revoked(store, one)
    assert not await revoked(store, two)

    # Suspend, delete: all of them, no other workspace's.
    assert await store.revoke_tokens(WS) == 0  # no live token left, credentials all the same
    assert await revoked(store, two)
    assert not await revoked(store, bob)
    first = await store.find_llm_credential(tokens.digest(one))
    assert first is not None and first.revoked_at is not None
    assert await store.revoke_tokens(WS) == 0
    again = await store.find_llm_credential(tokens.digest(one))
    assert again == first  # an earlier revocation keeps its time


async def test_purge_and_forget_delete_the_credentials_and_keep_the_usage(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    """PurgeWorkspace (`Store.purge_workspace`) and Kubernetes' forget_workspace delete
    a workspace's llm_credentials rows; its llm_usage rows are history and stay (until
    the retention's usage days), and count toward the day's budget of a workspace of
    the same name applied again."""
    await store.apply_workspace(make_workspace("alice"))
    one = await mint(store, WS, 1)
    await store.insert_token(WS, 1, sha("t1"), "c1")
    two = await mint(store, WS, 2)
    await store.insert_token(WS, 2, sha("t2"), "c2")
    bob = await mint(store, OTHER, 1)
    await store.record_llm_usage(WS, DAY, "anthropic", Usage(10, 20, 3, 4), error=False)
    await store.record_llm_usage(OTHER, DAY, "anthropic", Usage(1, 1), error=False)
    assert await count(db, "llm_credentials", WS) == 2

    assert not await store.purge_workspace("default", "alice")  # not marked: left alone
    assert await count(db, "llm_credentials", WS) == 2
    assert await store.request_delete("default", "alice", purge=True)
    assert await store.purge_workspace("default", "alice")

    assert await count(db, "llm_credentials", WS) == 0
    for gone in (one, two):  # the gateway: invalid_credential
        assert await store.find_llm_credential(tokens.digest(gone)) is None
    assert not await revoked(store, bob)
    kept = await store.llm_usage(WS)
    assert [counts(r) for r in kept] == [(1, 0, 10, 20, 3, 4)]
    assert await store.llm_tokens_on(WS, DAY) == 37
    assert await count(db, "llm_usage") == 2

    # forget_workspace (Kubernetes mode: the Workspace object is gone).
    await store.forget_workspace(OTHER)
    assert await store.find_llm_credential(tokens.digest(bob)) is None
    assert await count(db, "llm_credentials") == 0
    assert await store.llm_tokens_on(OTHER, DAY) == 2


# ------------------------------------------------------------------ usage


async def test_usage_accumulates_per_workspace_day_and_provider(store: Store) -> None:
    before = DAY - timedelta(days=1)
    await store.record_llm_usage(WS, DAY, "anthropic", Usage(100, 20, 3, 40), error=False)
    await store.record_llm_usage(WS, DAY, "anthropic", Usage(1, 2, 5, 7), error=False)
    await store.record_llm_usage(WS, DAY, "anthropic", Usage(), error=True)  # refused: 0
    await store.record_llm_usage(WS, DAY, "anthropic", Usage(9, 0, 0, 0), error=True)
    await store.record_llm_usage(WS, DAY, "openai", Usage(50, 6, 0, 8), error=False)
    await store.record_llm_usage(WS, before, "anthropic", Usage(1000, 1000), error=False)
    await store.record_llm_usage(OTHER, DAY, "anthropic", Usage(7, 7, 7, 7), error=True)

    rows = await store.llm_usage(WS)
    assert [usage_key(r) for r in rows] == [
        (WS, DAY, "anthropic"), (WS, DAY, "openai"), (WS, before, "anthropic")]
    assert [counts(r) for r in rows] == [
        (4, 2, 110, 22, 8, 47),  # requests, errors, input, output, cache creation, read
        (1, 0, 50, 6, 0, 8),
        (1, 0, 1000, 1000, 0, 0)]
    assert [r.tokens for r in rows] == [187, 64, 2000]

    everyone = await store.llm_usage()
    assert [usage_key(r) for r in everyone] == [  # newest day first, then workspace
        (WS, DAY, "anthropic"), (WS, DAY, "openai"), (OTHER, DAY, "anthropic"),
        (WS, before, "anthropic")]
    assert counts(everyone[2]) == (1, 1, 7, 7, 7, 7)
    assert await store.llm_usage("default.nobody") == []


async def test_usage_by_days_as_the_api_asks(store: Store) -> None:
    """GET /api/v1/usage?days=N asks for `since` = today - (N - 1) days (UTC) and at
    most USAGE_ROWS rows."""
    today = datetime.now(UTC).date()
    for age in (0, 1, 6, 7, 30):
        await store.record_llm_usage(WS, today - timedelta(days=age), "anthropic",
                                     Usage(age + 1), error=False)
    await store.record_llm_usage(OTHER, today - timedelta(days=6), "openai", Usage(1),
                                 error=False)
    await store.record_llm_usage(OTHER, today - timedelta(days=7), "openai", Usage(1),
                                 error=False)

    def since(days: int) -> date:
        return today - timedelta(days=days - 1)

    week = await store.llm_usage(WS, since=since(7))
    assert [(today - r.day).days for r in week] == [0, 1, 6]
    assert [r.input_tokens for r in week] == [1, 2, 7]
    assert [(today - r.day).days for r in await store.llm_usage(WS, since=since(1))] == [0]
    assert [(today - r.day).days for r in await store.llm_usage(WS, since=since(31))] == [
        0, 1, 6, 7, 30]
    assert [usage_key(r) for r in await store.llm_usage(since=since(7))] == [
        (WS, today, "anthropic"), (WS, today - timedelta(days=1), "anthropic"),
        (WS, today - timedelta(days=6), "anthropic"),
        (OTHER, today - timedelta(days=6), "openai")]
    # The row limit keeps the newest.
    assert [(today - r.day).days for r in await store.llm_usage(WS, limit=2)] == [0, 1]
    assert len(await store.llm_usage(since=since(400), limit=3)) == 3


async def test_tokens_on_a_day_count_every_kind_on_every_provider(store: Store) -> None:
    """The budget (tokensPerDay) counts what `Usage.total` counts: input, output, cache
    creation and cache read tokens, of every provider, failed calls included, on that
    UTC day, of that workspace."""
    assert await store.llm_tokens_on(WS, DAY) == 0
    await store.record_llm_usage(WS, DAY, "anthropic", Usage(1, 10, 100, 1000), error=False)
    assert await store.llm_tokens_on(WS, DAY) == 1111
    await store.record_llm_usage(WS, DAY, "anthropic", Usage(2, 20, 200, 2000), error=True)
    await store.record_llm_usage(WS, DAY, "openai", Usage(10_000, 0, 0, 100_000),
                                 error=False)
    await store.record_llm_usage(WS, DAY, "minimax", Usage(), error=True)
    await store.record_llm_usage(WS, DAY - timedelta(days=1), "anthropic",
                                 Usage(1_000_000), error=False)
    await store.record_llm_usage(WS, DAY + timedelta(days=1), "anthropic",
                                 Usage(2_000_000), error=False)
    await store.record_llm_usage(OTHER, DAY, "anthropic", Usage(3_000_000), error=False)

    total = Usage(1, 10, 100, 1000) + Usage(2, 20, 200, 2000) + Usage(10_000, 0, 0, 100_000)
    assert await store.llm_tokens_on(WS, DAY) == total.total == 113_333
    assert sum(r.tokens for r in await store.llm_usage(WS) if r.day == DAY) == total.total
    assert await store.llm_tokens_on(OTHER, DAY) == 3_000_000
    assert await store.llm_tokens_on("default.nobody", DAY) == 0


# ------------------------------------------------------------------ retention


async def not_at_midnight() -> None:
    """Wait out the last seconds of a UTC day: the test's days are counted from one."""
    now = datetime.now(UTC)
    left = (datetime.combine(now.date() + timedelta(days=1), time(), UTC) - now)
    if left < timedelta(seconds=10):
        await asyncio.sleep(left.total_seconds() + 0.5)


def nothing_but(**pruned: int) -> dict[str, int]:
    return {**dict.fromkeys(PRUNED_TABLES, 0), **pruned}


async def test_revoked_credentials_go_after_the_token_grace_current_ones_never(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    assert Retention().token_grace_seconds == 3600
    minted = []
    for generation in (1, 2, 3):  # each token revokes the generations before it
        minted.append(await mint(store, WS, generation))
        await store.insert_token(WS, generation, sha(f"t{generation}"), f"c{generation}")
    *old, current = minted
    bob = await mint(store, OTHER, 1)
    # Current credentials made long ago are still current.
    await db.execute("UPDATE llm_credentials SET created_at = now() - interval '3 years'")
    assert [await revoked(store, c) for c in (*old, current, bob)] == [
        True, True, False, False]

    assert await store.prune(Retention()) == nothing_but()  # just revoked: within grace
    await db.execute("UPDATE llm_credentials SET revoked_at = revoked_at - interval '50 minutes'")
    assert await store.prune(Retention()) == nothing_but()  # 50 minutes: still within
    assert await revoked(store, old[0]) and await revoked(store, old[1])

    await db.execute("UPDATE llm_credentials SET revoked_at = revoked_at - interval '20 minutes' "
                     "WHERE generation = 1")
    assert await store.prune(Retention()) == nothing_but(llm_credentials=1)
    assert await store.find_llm_credential(tokens.digest(old[0])) is None
    assert await revoked(store, old[1])
    await db.execute("UPDATE llm_credentials SET revoked_at = revoked_at - interval '20 minutes'")
    assert await store.prune(Retention()) == nothing_but(llm_credentials=1)
    assert await store.find_llm_credential(tokens.digest(old[1])) is None
    assert not await revoked(store, current) and not await revoked(store, bob)

    # A grace of 0: a revoked credential goes at the next pass, a current one never.
    await store.revoke_tokens(OTHER)
    pruned = await store.prune(Retention(token_grace_seconds=0))
    assert pruned == nothing_but(tokens=2, llm_credentials=1)  # and tokens t1, t2
    assert await store.find_llm_credential(tokens.digest(bob)) is None
    assert not await revoked(store, current)
    assert await store.prune(Retention(token_grace_seconds=0)) == nothing_but()
    assert await count(db, "llm_credentials") == 1


async def test_credential_pruning_is_batched_and_capped_per_pass(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    for generation in range(1, 101):
        await mint(store, WS, generation)
    await store.revoke_tokens(WS)
    await db.execute("UPDATE llm_credentials SET revoked_at = now() - interval '2 hours'")
    policy = Retention(batch_rows=30, max_batches=2)
    assert (await store.prune(policy))["llm_credentials"] == 60
    assert (await store.prune(policy))["llm_credentials"] == 40
    assert await count(db, "llm_credentials") == 0


async def test_usage_older_than_the_retained_days_is_pruned(
        store: Store, db: asyncpg.Connection[asyncpg.Record]) -> None:
    assert Retention().llm_usage_days == RETAIN_LLM_USAGE_DAYS == 400

    async def today() -> date:
        value: date = await db.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
        return value

    await not_at_midnight()
    start = await today()
    ages = (0, 1, 399, 400, 401, 402, 1000)
    for age in ages:
        for workspace in (WS, OTHER):
            await store.record_llm_usage(workspace, start - timedelta(days=age), "anthropic",
                                         Usage(age + 1), error=False)
    await store.record_llm_usage(WS, start - timedelta(days=500), "openai", Usage(1),
                                 error=False)
    assert await count(db, "llm_usage") == 15

    pruned = await store.prune(Retention())
    assert pruned == nothing_but(llm_usage=7)  # 401, 402 and 1000 days of both, and 500
    for workspace in (WS, OTHER):
        assert [(start - r.day).days for r in await store.llm_usage(workspace)] == [
            0, 1, 399, 400]
    assert await store.prune(Retention()) == nothing_but()

    # A shorter limit, batched; 0 turns it off.
    await store.record_llm_usage(WS, start - timedelta(days=5000), "anthropic", Usage(1),
                                 error=False)
    assert await store.prune(Retention(llm_usage_days=0)) == nothing_but()
    assert await count(db, "llm_usage") == 9
    policy = Retention(llm_usage_days=1, batch_rows=2, max_batches=2)
    assert (await store.prune(policy))["llm_usage"] == 4  # capped: 2 statements of 2
    assert (await store.prune(policy))["llm_usage"] == 1
    left = {(r.workspace_id, (start - r.day).days) for r in await store.llm_usage()}
    assert left == {(WS, 0), (WS, 1), (OTHER, 0), (OTHER, 1)}
