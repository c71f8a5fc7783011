"""The token invariant's ledger (docs/design.md 8.2): every agent token the harness
read, and when each one must be refused.

A token must be refused once its generation was replaced (a newer container's
token converged) and, with `--token-expiration`, once a refreshed token of the
same generation superseded it and its own lifetime ran out. The ledger does not
present tokens itself; it says which are due (`due`), which are still owed at
the end (`owed`), and which generations never yielded a token to check
(`unread`). `TokenProbe` reads tokens from containers and presents them to the
registry, through the callables it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

EXPIRY_MARGIN = 2.0
"""Seconds past `first_seen + lifetime` before a superseded token must be refused:
it was issued at or before the harness first read it, so it has expired by then
(the margin covers the registry's clock against the harness's)."""


@dataclass
class SeenToken:
    workspace: str
    generation: int
    refresh: int
    """0 for the token the container was created with, n for its n-th refresh seen."""
    token: str
    first_seen: float
    replaced: bool = False
    """A newer generation of the workspace converged: revoked."""
    superseded_at: float | None = None
    """When a newer token of the same generation (a refresh) was first seen."""
    answer: str | None = None
    """How the registry answered when it was presented ('401 stale_token', ...)."""
    deleted: bool = False
    """Its workspace was deleted (and maybe applied again, a new workspace whose
    generations count from 1 anew): purged, so refused like a replaced one."""

    @property
    def label(self) -> str:
        suffix = f" refresh {self.refresh}" if self.refresh else ""
        return f"{self.workspace} g{self.generation}{suffix}{' (deleted)' if self.deleted else ''}"

    def why_refused(self) -> str:
        return "deleted" if self.deleted else "replaced" if self.replaced else "expired"

    def due_at(self, lifetime: float | None) -> float | None:
        """From when it must be refused (run-clock seconds); None: not (yet) known."""
        if self.replaced:
            return self.first_seen
        if self.superseded_at is None or lifetime is None:
            return None
        return self.first_seen + lifetime + EXPIRY_MARGIN


class TokenLedger:
    """Every token read from an agent's container, by workspace and generation."""

    def __init__(self, lifetime: float | None) -> None:
        self.lifetime = lifetime
        self._seen: dict[str, list[SeenToken]] = defaultdict(list)
        self._deletions: dict[str, int] = defaultdict(int)
        self.unread: dict[tuple[str, int], str] = {}
        """(workspace, generation) -> why no token of it could ever be read."""

    def saw(self, workspace: str, generation: int, token: str, now: float) -> bool:
        """Record a token read from a container of `generation`; False if known."""
        seen = self._seen[workspace]
        if any(t.token == token for t in seen):
            return False
        same = [t for t in seen if t.generation == generation and not t.deleted]
        for older in same:
            if older.superseded_at is None:
                older.superseded_at = now
        seen.append(SeenToken(workspace, generation, len(same), token, now))
        self.unread.pop((workspace, generation), None)
        return True

    def read_failed(self, workspace: str, generation: int, why: str) -> None:
        if not any(t.generation == generation and not t.deleted
                   for t in self._seen[workspace]):
            self.unread[(workspace, generation)] = why

    def current(self, workspace: str, generation: int) -> SeenToken | None:
        """The newest token read for that generation (of the workspace as it is now)."""
        same = [t for t in self._seen[workspace] if t.generation == generation
                and not t.deleted]
        return same[-1] if same else None

    def deleted(self, workspace: str) -> None:
        """The workspace was deleted: every token read from it must be refused from
        now on, and generations read later belong to the workspace applied again."""
        for t in self._seen[workspace]:
            t.deleted = t.replaced = True
        self._deletions[workspace] += 1
        for key in [k for k in self.unread if k[0] == workspace]:
            self.unread[(f"{workspace} (deleted #{self._deletions[workspace]})", key[1])] = \
                self.unread.pop(key)

    def replaced_below(self, workspace: str, live_generation: int) -> None:
        """Generations older than the converged `live_generation` are revoked."""
        for t in self._seen[workspace]:
            if t.generation < live_generation:
                t.replaced = True

    def due(self, now: float) -> list[SeenToken]:
        """Tokens not yet presented that must be refused by now, oldest first."""
        ready = [(at, t) for t in self._unchecked() for at in [t.due_at(self.lifetime)]
                 if at is not None and at <= now]
        return [t for _, t in sorted(ready, key=lambda pair: pair[0])]

    def owed(self) -> list[SeenToken]:
        """Tokens not yet presented that must be refused now or later (at the end)."""
        return [t for t in self._unchecked() if t.due_at(self.lifetime) is not None]

    def all(self) -> Iterator[SeenToken]:
        for seen in self._seen.values():
            yield from seen

    def counts(self) -> dict[str, int]:
        tokens = list(self.all())
        return {"read": len(tokens),
                "generations": len({(t.workspace, t.generation) for t in tokens}),
                "refreshes": sum(1 for t in tokens if t.refresh),
                "presented": sum(1 for t in tokens if t.answer is not None),
                "unread_generations": len(self.unread)}

    def _unchecked(self) -> Iterator[SeenToken]:
        return (t for t in self.all() if t.answer is None)


Answer = tuple[int, Any]
PRESENT_EVERY = 1.0
"""Seconds between two tokens presented during the run: the registry refills a
source's failed-authentication budget at one a second, so a steady one a
second never runs into its 429s."""


@dataclass
class TokenProbe:
    """Reads every generation's token while the run goes on, presents each token
    that must be refused as soon as it must be (spread in time), and at the end
    checks every live token and presents whatever is still owed."""

    ledger: TokenLedger
    names: list[str]
    mine: Callable[[str], list[Any]]
    converged: Callable[[str], bool]
    workspace_id: Callable[[str], str]
    read: Callable[[str], Awaitable[str | None]]
    """The token file of a container (None: no file, or no container)."""
    present: Callable[[str, str], Awaitable[Answer]]
    """A heartbeat for a workspace id with a token: (HTTP status or 0, JSON answer)."""
    now: Callable[[], float]
    violate: Callable[[str, str], None]
    """(workspace, detail) of a token violation."""
    on_token: Callable[[str], None] = lambda token: None
    containers: Callable[[], Awaitable[list[Any]]] | None = None
    """Every container of the instance, listed now (not the last sample)."""

    async def read_tokens(self, names: list[str] | tuple[str, ...], *,
                          again: bool = False) -> None:
        """The token of each running container once per generation (`again`: read it
        anew, as a refreshed token replaces the file within a generation).

        A workspace's containers share one config volume, and a recreate writes the
        new generation's token into it before the old container stops: a token read
        from generation N is N's only if no newer container existed when it was read.
        So the containers are listed again after the reads (a newer one is created
        before its token is written): a read from a container that has a newer
        sibling by then is not attributed to it (counted as unread)."""
        found: list[tuple[str, int, str]] = []
        for name in names:
            for c in self.mine(name):
                if not c.running or (not again and self.ledger.current(
                        name, c.token_generation) is not None):
                    continue
                try:
                    token = await self.read(c.id)
                except Exception as exc:  # recorded; reported if the generation is never read
                    self.ledger.read_failed(name, c.token_generation,
                                            f"{type(exc).__name__}: {exc}")
                    continue
                if not token:
                    self.ledger.read_failed(name, c.token_generation,
                                            "no token file (or the container was gone)")
                else:
                    found.append((name, c.token_generation, token))
        newest = await self._newest_generations() if found else {}
        for name, generation, token in found:
            if newest.get(name, generation) > generation:
                self.on_token(token)  # whose ever it is, it is never to be shown
                self.ledger.read_failed(name, generation, "read while a newer generation was "
                                        "being created (its token may have been the file's)")
            elif self.ledger.saw(name, generation, token, self.now()):
                self.on_token(token)

    async def _newest_generations(self) -> dict[str, int]:
        """The highest token generation of any container (created ones included) per
        workspace name, listed now; {} if there is no way to list."""
        if self.containers is None:
            return {}
        ids = {self.workspace_id(name): name for name in self.names}
        newest: dict[str, int] = {}
        for c in await self.containers():
            name = ids.get(c.workspace_id)
            if name is not None:
                newest[name] = max(newest.get(name, 0), c.token_generation)
        return newest

    def _mark_replaced(self) -> None:
        for name in self.names:
            live = self._live_generation(name)
            if live is not None and self.converged(name):
                self.ledger.replaced_below(name, live)

    def _live_generation(self, name: str) -> int | None:
        return max((c.token_generation for c in self.mine(name) if c.running), default=None)

    async def _present(self, seen: SeenToken, *, last_chance: bool) -> None:
        status, answer = await self.present(self.workspace_id(seen.workspace), seen.token)
        if status in (200, 401):
            seen.answer = f"{status} {_error_class(answer)}".strip()
        if status == 200:
            self.violate(seen.workspace, f"token generation {seen.generation}"
                         f"{f' refresh {seen.refresh}' if seen.refresh else ''} "
                         f"({seen.why_refused()}) is still accepted: HTTP 200")
        elif status != 401 and last_chance:
            seen.answer = f"{status}"
            self.violate(seen.workspace, f"token generation {seen.generation} "
                         f"({seen.why_refused()}) could not be checked: the registry "
                         f"answered HTTP {status or 'nothing'} {_error_class(answer)}".rstrip())
        # Otherwise (controller or database restarting) it is presented again later.

    async def step(self, *, again: bool) -> None:
        """One tick of the run: pick up new generations (every token, if `again`),
        mark replaced generations, present the token that has been due longest."""
        await self.read_tokens(self.names, again=again)
        self._mark_replaced()
        due = self.ledger.due(self.now())
        if due:
            await self._present(due[0], last_chance=False)

    async def run(self, stop: asyncio.Event) -> None:
        lifetime = self.ledger.lifetime
        reread = None if lifetime is None else max(PRESENT_EVERY, lifetime / 4)
        last_read = self.now()
        while not stop.is_set():
            again = reread is not None and self.now() - last_read >= reread
            if again:
                last_read = self.now()
            await self.step(again=again)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PRESENT_EVERY)

    async def final(self, say: Callable[[str], None]) -> list[str]:
        """Every live token accepted; every token owed refused. Returns notes."""
        for name in self.names:
            await self.read_tokens([name], again=True)
            generation = self._live_generation(name)
            if generation is None:
                self.violate(name, "no running container: the live token cannot be checked")
                continue
            seen = self.ledger.current(name, generation)
            if seen is None:
                why = self.ledger.unread.get((name, generation), "never read")
                self.violate(name, f"the live token (generation {generation}) could not be "
                                   f"read: {why}")
                continue
            status, answer = await self.present(self.workspace_id(name), seen.token)
            if status != 200:
                self.violate(name, f"the live token (generation {generation}) is refused: "
                                   f"HTTP {status} {_error_class(answer)}".rstrip())
        for name in self.names:
            generation = self._live_generation(name)
            if generation is not None:
                self.ledger.replaced_below(name, generation)
        owed = self.ledger.owed()
        latest = max((t.due_at(self.ledger.lifetime) or 0.0 for t in owed), default=0.0)
        if latest > self.now():
            say(f"token check: waiting {latest - self.now():.0f}s for superseded tokens "
                "to expire")
            await asyncio.sleep(latest - self.now())
        if owed:
            say(f"token check: presenting {len(owed)} replaced or expired token(s) "
                "(failed authentications are rate-limited: about one a second)")
        for seen in owed:
            await self._present(seen, last_chance=True)
        counts = self.ledger.counts()
        notes = [f"token check: {counts['read']} tokens read ({counts['generations']} "
                 f"generations, {counts['refreshes']} refreshes); {counts['presented']} "
                 "presented as replaced or expired"]
        unread = sorted(self.ledger.unread.items())
        if unread:
            listed = ", ".join(f"{ws} g{gen}" for (ws, gen), _ in unread[:5])
            notes.append(f"token check: {len(unread)} generation(s) replaced before their token "
                         f"could be read ({listed}"
                         f"{', ...' if len(unread) > 5 else ''}); they were not presented")
        return notes


def _error_class(answer: Any) -> str:
    error = answer.get("error") if isinstance(answer, dict) else None
    return str(error.get("class")) if isinstance(error, dict) else ""
