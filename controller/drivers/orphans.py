"""Removing containers labelled for workspaces that do not exist (both drivers)."""

from __future__ import annotations

import logging

from controller.core.observed import ObservedContainer
from controller.core.ops import RemoveContainer, StopContainer
from controller.core.plan import plan_orphans
from controller.core.settings import PlatformSettings
from controller.reconcile.ports import DriverEngine

log = logging.getLogger("wsctl.driver")


async def remove_orphans(engine: DriverEngine, containers: list[ObservedContainer],
                         known_ids: set[str], settings: PlatformSettings) -> None:
    """Best effort: a failure is logged and retried at the next resync."""
    for op in plan_orphans(containers, known_ids, settings):
        try:
            if isinstance(op, StopContainer):
                await engine.stop(op.container_id, op.timeout)
            elif isinstance(op, RemoveContainer):
                log.info("removing orphan container %s (no such workspace)",
                         op.container_id[:12])
                await engine.remove(op.container_id)
        except Exception as exc:
            log.warning("orphan cleanup failed: %s", exc)
