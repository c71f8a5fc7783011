"""A restart context for an agent that died since it registered is dropped, not retried
into a RecreateFailed (found by the chaos harness: a crash-looping agent exits one
second after start, and the failed delivery was reported as a failed recreate)."""

from __future__ import annotations

from typing import Any

from controller.api.a2a import A2AProxy, AgentTarget


class Activity:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def append_activity(self, workspace_id: str, source: str, **row: Any) -> int:
        self.rows.append(row)
        return len(self.rows)


async def test_no_running_container_means_nobody_to_tell() -> None:
    lookups: list[str] = []

    async def address(workspace_id: str) -> AgentTarget | None:
        lookups.append(workspace_id)
        return None

    activity = Activity()
    proxy = A2AProxy(activity, address)
    try:
        await proxy.deliver_restart_context("default.alice", 3, "you were recreated")
    finally:
        await proxy.close()
    assert lookups == ["default.alice"]  # one look, no retries
    assert activity.rows == []
