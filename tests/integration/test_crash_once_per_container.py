"""One container death is one crash, even when its diagnostics were captured twice.

Found by the chaos harness: a controller SIGKILLed right after CaptureDiagnostics
captures the same dead container again after its restart; counting both made
the crash-loop back-off double for the rest of the window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.adapters.postgres import Store

pytestmark = [pytest.mark.postgres]

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


async def test_a_container_captured_twice_is_one_crash_at_its_first_capture(
        store: Store) -> None:
    ws = "default.alice"
    for container_id, seconds in (("a", 1), ("b", 5), ("b", 25)):
        await store.add_diagnostics(ws, container_id=container_id, reason="ContainerExited",
                                    captured_at=T0 + timedelta(seconds=seconds))
    expected = (2, T0 + timedelta(seconds=5))
    assert await store.crash_stats(ws, T0) == expected
    seen = await store.observe_registry(ws, T0)
    assert (seen.recent_crashes, seen.last_crash_at) == expected


async def test_crashes_before_a_recreate_for_a_new_config_do_not_count(store: Store) -> None:
    ws = "default.bob"
    for container_id, reason, seconds in (("a", "ContainerExited", 1),
                                          ("b", "ContainerExited", 2),
                                          ("c", "ContainerExited", 3),  # a crash loop
                                          ("d", "ConfigChanged", 4),  # the spec is fixed
                                          ("e", "ContainerExited", 9)):  # one death since
        await store.add_diagnostics(ws, container_id=container_id, reason=reason,
                                    captured_at=T0 + timedelta(seconds=seconds))
    expected = (1, T0 + timedelta(seconds=9))
    assert await store.crash_stats(ws, T0) == expected
    seen = await store.observe_registry(ws, T0)
    assert (seen.recent_crashes, seen.last_crash_at) == expected


async def test_deaths_with_the_engine_are_not_crashes(store: Store) -> None:
    ws = "default.carol"
    for container_id, reason, seconds in (("a", "EngineRestarted", 1),
                                          ("b", "EngineRestarted", 2),
                                          ("c", "ContainerExited", 3),
                                          ("d", "EngineRestarted", 4)):
        await store.add_diagnostics(ws, container_id=container_id, reason=reason,
                                    captured_at=T0 + timedelta(seconds=seconds))
    expected = (1, T0 + timedelta(seconds=3))
    assert await store.crash_stats(ws, T0) == expected
    seen = await store.observe_registry(ws, T0)
    assert (seen.recent_crashes, seen.last_crash_at) == expected
