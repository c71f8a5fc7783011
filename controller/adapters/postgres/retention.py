"""Retention: deleting what is beyond the configured limits, in bounded batches.

`Store.prune(policy)` is one pass over the tables that grow with use: token
rows that can no longer authenticate (after a grace period), activity older
than its age limit or beyond its count per workspace, and events and
diagnostics beyond their count per workspace or age limit. Each statement
deletes at most `policy.batch_rows` rows (one short transaction, by `ctid`
from an indexed sub-select), and each table gets at most `policy.max_batches`
statements per pass; what is left waits for the next pass. Migration 0006 adds
the indexes the age limits and the token query use.

What is never deleted: a workspace's current token, a superseded token before
its own expiry (it still authenticates), any token row until `token_grace_seconds`
after it stopped being usable, and each workspace's newest token row (it carries
the highest generation, which the planner counts on to number the next one).
Deleting the oldest rows first keeps crash counting exact: every retained
diagnostics row is newer than every deleted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.adapters.postgres.base import _translated
from controller.core.settings import Retention

if TYPE_CHECKING:
    from controller.adapters.postgres.base import _Pool

PRUNED_TABLES = ("tokens", "activity", "events", "diagnostics", "llm_credentials",
                 "llm_usage")
"""The tables `prune` deletes from (the keys of its answer)."""

_DAY = 86_400.0

# Token rows no longer usable for `$1` seconds, never a workspace's newest row.
# The sub-select runs on tokens_retired_idx; the newer-row test on the primary key.
_PRUNE_TOKENS = """
    DELETE FROM tokens WHERE ctid = ANY(ARRAY(
        SELECT t.ctid FROM tokens t
         WHERE (t.revoked_at IS NOT NULL OR t.superseded_at IS NOT NULL)
           AND least(t.revoked_at, t.expires_at) < now() - make_interval(secs => $1)
           AND EXISTS (SELECT 1 FROM tokens n
                        WHERE n.workspace_id = t.workspace_id
                          AND (n.generation, n.rotation) > (t.generation, t.rotation))
         LIMIT $2))
"""


# LLM credentials revoked `$1` seconds ago (their generation is over for good).
_PRUNE_LLM_CREDENTIALS = """
    DELETE FROM llm_credentials WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM llm_credentials
         WHERE revoked_at < now() - make_interval(secs => $1) LIMIT $2))
"""

# Usage days older than `$1` days.
_PRUNE_LLM_USAGE = """
    DELETE FROM llm_usage WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM llm_usage
         WHERE day < (now() AT TIME ZONE 'UTC')::date - $1::integer LIMIT $2))
"""


@dataclass(frozen=True)
class _History:
    """One history table: its time column (age limit) and newest-first order (count)."""

    table: str
    time_column: str
    order: tuple[str, ...]

    def age_sql(self) -> str:
        """Rows older than `$1` seconds, on the table's time index."""
        return (f"DELETE FROM {self.table} WHERE ctid = ANY(ARRAY("  # noqa: S608 - constants
                f"SELECT ctid FROM {self.table} "
                f"WHERE {self.time_column} < now() - make_interval(secs => $1) LIMIT $2))")

    def edges_sql(self) -> str:
        """Per workspace over the limit `$1`: the newest row beyond it (its order columns).

        The workspaces come from a skip scan of the (workspace_id, ...) index, one
        probe each; the row beyond the limit from the same index."""
        cols = ", ".join(f"h.{c}" for c in self.order)
        desc = ", ".join(f"h.{c} DESC" for c in self.order)
        return f"""
            WITH RECURSIVE ws(workspace_id) AS (
                (SELECT workspace_id FROM {self.table} ORDER BY workspace_id LIMIT 1)
                UNION ALL
                SELECT (SELECT h.workspace_id FROM {self.table} h
                         WHERE h.workspace_id > ws.workspace_id
                         ORDER BY h.workspace_id LIMIT 1)
                  FROM ws WHERE ws.workspace_id IS NOT NULL)
            SELECT ws.workspace_id, e.* FROM ws CROSS JOIN LATERAL (
                   SELECT {cols} FROM {self.table} h WHERE h.workspace_id = ws.workspace_id
                    ORDER BY {desc} OFFSET $1 LIMIT 1) e
             WHERE ws.workspace_id IS NOT NULL
        """  # noqa: S608 - constants

    def count_sql(self) -> str:
        """Rows of workspace `$1` at or beyond the edge (`$2`...), at most the batch."""
        cols = ", ".join(self.order)
        edge = ", ".join(f"${i + 2}" for i in range(len(self.order)))
        limit = f"${len(self.order) + 2}"
        return (f"DELETE FROM {self.table} WHERE ctid = ANY(ARRAY("  # noqa: S608 - constants
                f"SELECT ctid FROM {self.table} WHERE workspace_id = $1 "
                f"AND ({cols}) <= ({edge}) LIMIT {limit}))")


_ACTIVITY = _History("activity", "at", ("id",))
_EVENTS = _History("events", "at", ("id",))
_DIAGNOSTICS = _History("diagnostics", "captured_at", ("captured_at", "id"))


def _deleted(status: str) -> int:
    """The row count of a `DELETE n` command status."""
    return int(status.rsplit(" ", 1)[-1])


class _Pass:
    """One table's share of a pass: its statement budget and what it deleted."""

    def __init__(self, pool: _Pool, policy: Retention) -> None:
        self.pool = pool
        self.batch = policy.batch_rows
        self.budget = policy.max_batches
        self.deleted = 0

    async def run(self, sql: str, *args: object) -> None:
        """Repeat the batch statement until it deletes less than a batch or the budget ends."""
        while self.budget > 0:
            self.budget -= 1
            n = _deleted(await self.pool.execute(sql, *args, self.batch))
            self.deleted += n
            if n < self.batch:
                return


class RetentionMixin:
    """`Store.prune`: the retention pass over tokens, activity, events and diagnostics."""

    _pool: _Pool

    @_translated
    async def prune(self, policy: Retention | None = None) -> dict[str, int]:
        """Delete what `policy` (default: the documented defaults) does not keep;
        the rows deleted per table (`PRUNED_TABLES`), 0 included."""
        policy = policy or Retention()
        pruned: dict[str, int] = {}
        tokens = _Pass(self._pool, policy)
        await tokens.run(_PRUNE_TOKENS, float(policy.token_grace_seconds))
        pruned["tokens"] = tokens.deleted
        for history, days, rows in (
                (_ACTIVITY, policy.activity_days, policy.activity_rows),
                (_EVENTS, policy.history_days, policy.events),
                (_DIAGNOSTICS, policy.history_days, policy.diagnostics)):
            pruned[history.table] = await self._prune_history(history, days, rows, policy)
        credentials = _Pass(self._pool, policy)
        await credentials.run(_PRUNE_LLM_CREDENTIALS, float(policy.token_grace_seconds))
        pruned["llm_credentials"] = credentials.deleted
        usage = _Pass(self._pool, policy)
        if policy.llm_usage_days > 0:
            await usage.run(_PRUNE_LLM_USAGE, int(policy.llm_usage_days))
        pruned["llm_usage"] = usage.deleted
        return pruned

    async def _prune_history(self, history: _History, days: float, rows: int,
                             policy: Retention) -> int:
        done = _Pass(self._pool, policy)
        if days > 0:
            await done.run(history.age_sql(), days * _DAY)
        if rows > 0 and done.budget > 0:
            for edge in await self._pool.fetch(history.edges_sql(), rows):
                if done.budget <= 0:
                    break
                await done.run(history.count_sql(), *edge.values())
        return done.deleted
