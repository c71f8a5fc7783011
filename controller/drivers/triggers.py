"""What wakes a reconcile, the same in both drivers: Docker events on a workspace's
container, registry events (register, a heartbeat that changes something), and
the count of each source for /metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from controller.core.model import WorkspaceKey
from controller.reconcile.ports import DriverEngine

log = logging.getLogger("wsctl.driver")

# Docker actions that mean a workspace's container changed under us (both drivers).
TRIGGER_ACTIONS = frozenset({"die", "oom", "destroy", "stop", "kill", "pause", "unpause"})


@dataclass
class TriggerStats:
    """What woke the reconciles of a driver, and how many ran (both drivers)."""

    reconciles: int = 0
    triggers: dict[str, int] = field(default_factory=dict)

    def count(self, source: str) -> None:
        self.triggers[source] = self.triggers.get(source, 0) + 1


class EventTriggers:
    """Turns Docker and registry events into `trigger(key, source)` calls; a driver
    provides `engine` and `trigger`."""

    engine: DriverEngine

    def trigger(self, key: WorkspaceKey, source: str) -> None:
        raise NotImplementedError

    def on_registry_event(self, workspace_id: str) -> None:
        try:
            self.trigger(WorkspaceKey.from_id(workspace_id), "registry")
        except ValueError:
            log.debug("registry event for malformed workspace id ignored")

    def _on_docker_event(self, workspace_id: str, action: str, container_id: str) -> None:
        # Docker's list view can lag its events by a few ms: make the next
        # observation inspect this container instead of trusting a cached state.
        self.engine.forget(container_id)
        if action not in TRIGGER_ACTIONS:
            return
        try:
            key = WorkspaceKey.from_id(workspace_id)
        except ValueError:
            return
        log.info("%s: docker event %s on %s", key, action, container_id[:12])
        self.trigger(key, f"docker:{action}")
