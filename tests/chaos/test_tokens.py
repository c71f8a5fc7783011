"""The token invariant (8.2): every token read is presented when it must be refused,
and a token that cannot be checked is a counted failure, never a skip."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from controller.chaos.tokens import EXPIRY_MARGIN, TokenLedger, TokenProbe
from tests.chaos.fakes import view


@dataclass
class Registry:
    """Accepts the tokens in `live`, refuses the rest like the real registry (401)."""

    live: set[str] = field(default_factory=set)
    down: bool = False
    presented: list[str] = field(default_factory=list)

    async def present(self, workspace_id: str, token: str) -> tuple[int, Any]:
        self.presented.append(token)
        if self.down:
            return 0, None
        if token in self.live:
            return 200, {"ok": True}
        return 401, {"error": {"class": "stale_token"}}


@dataclass
class World:
    views: list[Any] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    converged: set[str] = field(default_factory=lambda: {"w01"})
    now: float = 0.0
    violations: list[tuple[str, str]] = field(default_factory=list)
    registry: Registry = field(default_factory=Registry)

    def probe(self, lifetime: float | None = None) -> TokenProbe:
        async def read(container_id: str) -> str | None:
            return self.files.get(container_id)
        return TokenProbe(
            TokenLedger(lifetime), ["w01"],
            mine=lambda name: [v for v in self.views if v.workspace_id == name],
            converged=lambda name: name in self.converged, workspace_id=lambda n: n,
            read=read, present=self.registry.present, now=lambda: self.now,
            violate=lambda name, detail: self.violations.append((name, detail)))

    def generation(self, g: int, token: str) -> None:
        """Generation g replaces whatever ran before; its token is the live one."""
        self.views = [view("w01", g)]
        self.files[f"id-w01-g{g}"] = token
        self.registry.live = {token}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_every_replaced_generation_is_presented_not_only_the_newest() -> None:
    world = World(converged=set())  # a crash loop: seven generations, then converged
    probe = world.probe()
    for g in range(1, 8):
        world.generation(g, f"tok-{g}")
        run(probe.step(again=False))
        world.now += 1
    world.converged = {"w01"}
    run(probe.final(lambda _: None))
    # Six replaced generations (the old cap was 3), each refused; the live one accepted.
    assert sorted(set(world.registry.presented)) == [f"tok-{g}" for g in range(1, 8)]
    assert world.violations == []
    assert probe.ledger.counts()["presented"] == 6


def test_replaced_tokens_are_presented_during_the_run_one_per_step() -> None:
    world = World()
    probe = world.probe()
    world.generation(1, "tok-1")
    run(probe.step(again=False))
    world.converged = set()  # mid-recreate: generation 2 up, not converged yet
    world.generation(2, "tok-2")
    run(probe.step(again=False))
    assert world.registry.presented == []  # not before the workspace converged
    world.converged = {"w01"}
    run(probe.step(again=False))
    assert world.registry.presented == ["tok-1"]


def test_a_replaced_token_still_accepted_is_a_violation() -> None:
    world = World()
    probe = world.probe()
    world.generation(1, "tok-1")
    run(probe.step(again=False))
    world.generation(2, "tok-2")
    world.registry.live.add("tok-1")  # revocation broken
    run(probe.final(lambda _: None))
    assert world.violations == [
        ("w01", "token generation 1 (replaced) is still accepted: HTTP 200")]


def test_an_unreadable_live_token_is_a_counted_failure() -> None:
    world = World()
    probe = world.probe()
    world.generation(1, "tok-1")
    del world.files["id-w01-g1"]
    run(probe.final(lambda _: None))
    assert world.violations == [("w01", "the live token (generation 1) could not be read: "
                                        "no token file (or the container was gone)")]


def test_no_running_container_is_a_counted_failure() -> None:
    world = World()
    probe = world.probe()
    run(probe.final(lambda _: None))
    assert world.violations == [
        ("w01", "no running container: the live token cannot be checked")]


def test_a_token_the_registry_never_answered_for_is_a_counted_failure() -> None:
    world = World()
    probe = world.probe()
    world.generation(1, "tok-1")
    run(probe.step(again=False))
    world.generation(2, "tok-2")
    world.registry.down = True
    run(probe.step(again=False))  # during the run: kept for later, not a verdict
    assert world.violations == []
    run(probe.final(lambda _: None))
    assert ("w01", "token generation 1 (replaced) could not be checked: the registry "
                   "answered HTTP nothing") in world.violations


def test_expired_refreshed_tokens_are_presented_once_their_lifetime_is_over() -> None:
    world = World()
    probe = world.probe(lifetime=10)
    world.generation(1, "tok-1a")
    run(probe.step(again=True))
    world.now = 5.0  # refreshed at half its life: both valid for a while
    world.files["id-w01-g1"] = "tok-1b"
    world.registry.live = {"tok-1a", "tok-1b"}
    run(probe.step(again=True))
    assert world.registry.presented == []
    world.now = 10 + EXPIRY_MARGIN  # tok-1a was read at 0: expired by now
    world.registry.live = {"tok-1b"}
    run(probe.step(again=True))
    assert world.registry.presented == ["tok-1a"]
    assert world.violations == []


def test_an_expired_token_still_accepted_is_a_violation_at_the_end() -> None:
    world = World()
    probe = world.probe(lifetime=1)
    world.generation(1, "tok-1a")
    run(probe.step(again=True))
    world.files["id-w01-g1"] = "tok-1b"
    world.registry.live = {"tok-1a", "tok-1b"}  # expiry broken
    run(probe.step(again=True))
    world.now = 1 + EXPIRY_MARGIN
    run(probe.final(lambda _: None))
    assert world.violations == [
        ("w01", "token generation 1 (expired) is still accepted: HTTP 200")]


def test_generations_replaced_before_their_token_was_read_are_noted() -> None:
    world = World()
    probe = world.probe()
    world.views = [view("w01", 1)]  # no token file yet
    run(probe.step(again=False))
    world.generation(2, "tok-2")
    notes = run(probe.final(lambda _: None))
    assert world.violations == []
    assert any("1 generation(s) replaced before their token could be read (w01 g1)" in n
               for n in notes), notes


def test_a_deleted_workspaces_tokens_are_refused_and_its_new_life_counts_anew() -> None:
    world = World()
    probe = world.probe()
    for g in (1, 2):
        world.generation(g, f"old-{g}")
        run(probe.step(again=False))
    probe.ledger.deleted("w01")  # delete-reapply: purged with the workspace
    world.generation(1, "new-1")  # applied again: its first container is generation 1 anew
    run(probe.step(again=False))
    current = probe.ledger.current("w01", 1)
    assert current is not None and current.token == "new-1"
    run(probe.final(lambda _: None))
    assert {"old-1", "old-2", "new-1"} <= set(world.registry.presented)
    assert world.violations == []
    labels = {t.token: (t.label, t.answer) for t in probe.ledger.all()}
    assert labels["old-2"] == ("w01 g2 (deleted)", "401 stale_token")
    assert labels["new-1"] == ("w01 g1", None)  # live: accepted at the end, never owed


def test_a_deleted_workspaces_token_still_accepted_is_a_violation() -> None:
    world = World()
    probe = world.probe()
    world.generation(1, "old-1")
    run(probe.step(again=False))
    probe.ledger.deleted("w01")
    world.generation(1, "new-1")
    world.registry.live = {"old-1", "new-1"}  # the purge forgot a token
    run(probe.final(lambda _: None))
    assert world.violations == [
        ("w01", "token generation 1 (deleted) is still accepted: HTTP 200")]


def test_a_token_read_while_a_newer_generation_is_created_is_not_attributed() -> None:
    """The containers share one config volume: a recreate writes g2's token into it
    while g1 still runs. Read from g1 then, the file holds g2's token; counted as g1's,
    it would later be 'a replaced token still accepted'."""
    world = World()
    listed: list[Any] = []

    async def containers() -> list[Any]:
        return listed
    probe = world.probe()
    probe.containers = containers
    world.generation(1, "tok-1")
    listed[:] = [view("w01", 1)]
    run(probe.step(again=False))
    world.files["id-w01-g1"] = "tok-2"  # WriteToken of the recreate: g2 created, not started
    listed[:] = [view("w01", 1), view("w01", 2, "created")]
    probe.ledger = TokenLedger(None)  # as if g1 was first read only now
    run(probe.step(again=False))
    assert probe.ledger.current("w01", 1) is None
    assert "newer generation" in probe.ledger.unread[("w01", 1)]
    world.generation(2, "tok-2")
    listed[:] = [view("w01", 2)]
    run(probe.step(again=False))
    current = probe.ledger.current("w01", 2)
    assert current is not None and current.token == "tok-2"
    run(probe.final(lambda _: None))
    assert world.violations == []
