"""The continuous probes: a double runner is reported only when inspect confirms it."""

from __future__ import annotations

from typing import Any

from controller.chaos.api import ApiError
from controller.chaos.model import RunClock
from controller.chaos.probes import Observer
from tests.chaos.fakes import FakeEngine, inline, view

WS = "chaos.w01"


class Api:
    def __init__(self, phase: str = "Online") -> None:
        self.phase = phase

    async def workspaces(self) -> list[dict[str, Any]]:
        return [{"metadata": {"name": "w01"}, "status": {"phase": self.phase, "conditions": [
            {"type": "Degraded", "status": "True" if self.phase == "Failed" else "False",
             "reason": "RecreateFailed", "message": "secret missing"}]}}]


def observer(engine: FakeEngine, api: Api | None = None) -> Observer:
    return Observer(api or Api(), engine, inline, RunClock(), ["w01"], "chaos")  # type: ignore[arg-type]


async def test_two_running_containers_are_a_violation_once() -> None:
    probe = observer(FakeEngine([view(WS, 1), view(WS, 2)]))
    await probe.sample()
    await probe.sample()
    (v,) = probe.violations
    assert (v.invariant, v.workspace, v.fault) == ("single-runner", "w01", "none")
    assert v.detail == (f"two running containers: wsctl-{WS}-g1 (running), "
                        f"wsctl-{WS}-g2 (running)")


async def test_a_list_that_trails_a_death_is_not_a_violation() -> None:
    engine = FakeEngine([view(WS, 1), view(WS, 2)], dead={f"id-{WS}-g1"})
    probe = observer(engine)
    await probe.sample()
    assert probe.violations == []
    assert probe.trailing_list == 1


async def test_phase_failed_is_a_violation_and_the_timeline_records_changes() -> None:
    probe = observer(FakeEngine([view(WS, 1)]), Api("Failed"))
    await probe.sample()
    await probe.sample()
    (v,) = probe.violations
    assert v.invariant == "no-failed" and "secret missing" in v.detail
    assert [(c.phase, c.reason) for c in probe.phases] == [("Failed", "RecreateFailed")]


class FlakyApi(Api):
    """Answers until `down` is set, as a controller that was killed and did not come back."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def workspaces(self) -> list[dict[str, Any]]:
        if self.down:
            raise ApiError("GET /api/v1/workspaces: HTTP no answer")
        return await super().workspaces()


async def test_nothing_counts_as_converged_while_the_controller_does_not_answer() -> None:
    api = FlakyApi()
    probe = observer(FakeEngine([view(WS, 1)]), api)
    await probe.sample()
    before = probe.problems("w01")
    api.down = True
    await probe.sample()  # the last view is kept, but it is no evidence of convergence
    assert not probe.converged("w01")
    assert probe.problems("w01") == ["the controller's API does not answer", *before]
    api.down = False
    await probe.sample()
    assert probe.problems("w01") == before


class DeletingApi(Api):
    """Lists w01 until `gone`, as a workspace deleted and applied again."""

    def __init__(self) -> None:
        super().__init__()
        self.gone = False

    async def workspaces(self) -> list[dict[str, Any]]:
        return [] if self.gone else await super().workspaces()


async def test_a_deleted_workspace_is_gone_from_the_view_and_the_timeline_says_so() -> None:
    api = DeletingApi()
    probe = observer(FakeEngine([]), api)
    api.gone = True
    await probe.sample()  # not applied yet: nothing to say
    assert probe.phases == []
    api.gone = False
    await probe.sample()
    api.gone = True
    await probe.sample()
    assert probe.problems("w01") == ["workspace not found"]  # not its last view
    api.gone = False
    await probe.sample()
    assert [c.phase for c in probe.phases] == ["Online", "Deleted", "Online"]
