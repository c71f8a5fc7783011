"""The test-only WSCTL_DEBUG_BREAK_* knobs: off by default, each breaks one thing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from controller.core.containerspec import container_spec, storage_volume
from controller.core.model import Condition, WorkspaceKey, WorkspaceStatus
from controller.core.ops import (
    CreateContainer,
    EnsureVolume,
    Event,
    Plan,
    RemoveContainer,
    StartContainer,
    StopContainer,
)
from controller.core.projection import Projection
from controller.core.settings import PlatformSettings
from controller.reconcile.execute import Executor
from controller.testing.debug_breaks import DebugBreaks
from tests.unit.helpers import workspace

KEY = WorkspaceKey("chaos", "w01")


class Recorder:
    """Every awaited method call is recorded as (name, args)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args))
            return None
        return call


def executor(breaks: DebugBreaks) -> tuple[Executor, Recorder, Recorder]:
    engine, store = Recorder(), Recorder()
    return breaks.executor(Executor(cast(Any, engine), cast(Any, store), "10.0.0.1")), \
        engine, store


def test_nothing_is_broken_unless_asked() -> None:
    breaks = DebugBreaks.from_environ({"WSCTL_DEBUG_BREAK_RECREATE": "0"})
    assert breaks == DebugBreaks()
    plain = Executor(cast(Any, Recorder()), cast(Any, Recorder()), "10.0.0.1")
    assert breaks.executor(plain) is plain
    activity, registry, driver = (cast(Any, object()) for _ in range(3))
    assert breaks.activity_store(activity) is activity
    assert breaks.registry_store(registry) is registry
    assert breaks.driver_store(driver) is driver


async def test_recreate_break_skips_recreates_but_not_creates() -> None:
    ex, engine, _ = executor(DebugBreaks.from_environ({"WSCTL_DEBUG_BREAK_RECREATE": "1"}))
    await ex.run(KEY, Plan("recreate", "ContainerExited", (StartContainer("c"),)))
    assert engine.calls == []
    await ex.run(KEY, Plan("create", "Created", (StartContainer("c"),)))
    assert engine.calls == [("start", ("c",))]


async def test_stop_old_break_never_stops_or_removes() -> None:
    ex, engine, _ = executor(DebugBreaks(stop_old=True))
    await ex.run(KEY, Plan("recreate", "x", (StopContainer("old", 5), RemoveContainer("old"),
                                             StartContainer("new"))))
    assert engine.calls == [("start", ("new",))]


async def test_degraded_reason_break_mislabels_events_and_status() -> None:
    ex, _, store = executor(DebugBreaks(degraded_reason=True))
    await ex.run(KEY, Plan("none", "x", events=(Event("Warning", "HeartbeatStale", "m"),)))
    assert store.calls == [("add_event", ("chaos.w01", "Warning", "AgentUnhealthy", "m"))]
    driver_store = Recorder()
    wrapped = DebugBreaks(degraded_reason=True).driver_store(cast(Any, driver_store))
    now = datetime.now(UTC)
    status = WorkspaceStatus(conditions=[Condition(
        type="Degraded", status="True", reason="HeartbeatStale", message="m",
        last_transition_time=now)])
    await wrapped.write_status("chaos", "w01", status)
    written = driver_store.calls[0][1][2]
    assert written.conditions[0].reason == "AgentUnhealthy"


async def test_storage_break_gives_a_recreated_container_a_fresh_volume() -> None:
    ws = workspace("w01", model="MiniMax-M3")
    settings = PlatformSettings()
    volume = storage_volume(ws)

    def plan(action: str, generation: int) -> Plan:
        spec = container_spec(ws, Projection(env={}, config_hash="h"), settings, generation)
        return Plan(action, "x", (EnsureVolume(volume), CreateContainer(spec)))

    breaks = DebugBreaks.from_environ({"WSCTL_DEBUG_BREAK_STORAGE": "1"})
    assert breaks.storage
    ex, engine, _ = executor(breaks)
    await ex.run(KEY, plan("create", 1))  # a first create (and a re-apply) is left alone
    await ex.run(KEY, plan("recreate", 2))  # a recreate forgets the storage
    await ex.run(KEY, plan("suspend", 3))  # and so does a suspension's standby (the wake)
    created = [args[0] for name, args in engine.calls if name == "create"]
    first, *others = ([(m.source, m.target) for m in spec.mounts] for spec in created)
    assert first == [("wsctl-default.w01-configs", "/configs"),
                     (volume.name, "/workspace")]
    assert others == [[("wsctl-default.w01-configs", "/configs"),
                       (f"{volume.name}-g{g}-forgotten", "/workspace")] for g in (2, 3)]


@dataclass(frozen=True)
class Token:
    workspace_id: str
    generation: int
    revoked_at: datetime | None


async def test_revocation_and_activity_breaks() -> None:
    class Store(Recorder):
        async def find_token(self, token_hash: str) -> Token:
            return Token("chaos.w01", 1, datetime.now(UTC))

    registry_store = DebugBreaks(token_revocation=True).registry_store(cast(Any, Store()))
    assert (await registry_store.find_token("h")).revoked_at is None
    activity = DebugBreaks(activity_writes=True).activity_store(cast(Any, Recorder()))
    assert await activity.append_activity("chaos.w01", "user", method="message/send") == 0


def test_log_secret_break_logs_environment_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "wsctl.debug")
    DebugBreaks(log_secret=True).log_secrets({"WSCTL_SECRET_X_KEY": "sk-value", "HOME": "/r"})
    assert "sk-value" in caplog.text and "/r" not in caplog.text
