"""A token file lost inside a running workspace (found by the chaos harness: deleted,
then the container restarted): the agent says so (401 missing_token) instead of
waiting forever, and the planner replaces the container as for a rejected token."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.agent import kit
from controller.agent.registry_client import KitAgent
from controller.core.observed import AuthFailure, Observed, ObservedTokens
from controller.core.ops import RecreateReason
from tests.unit.test_agent import FakeServer, Recorded, make_config
from tests.unit.test_plan import T0, container, registered, run, ws


def test_agent_reports_a_missing_token_file_then_uses_it_once_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit, "TOKEN_MISSING_REPORT_SECONDS", 0.1)
    monkeypatch.setattr(kit, "TOKEN_POLL_SECONDS", 0.05)
    token_file = tmp_path / ".auth_token"

    def refuse(rec: Recorded) -> tuple[int, Any]:
        return 401, {"error": {"class": "missing_token", "message": "Bearer required"}}

    server = FakeServer(refuse).start()
    try:
        config = make_config(server.url, token_file)
        agent = KitAgent(config, threading.Event())
        found: list[str | None] = []
        reader = threading.Thread(target=lambda: found.append(agent.wait_for_token()))
        reader.start()
        (report,) = server.wait_for("/registry/register")
        assert report.headers["authorization"].strip() == "Bearer"
        assert report.body == {"workspace_id": "default.alice"}
        token_file.write_text("tok-back\n")
        reader.join(5)
        assert found == ["tok-back"]
    finally:
        server.stop()


def test_missing_token_after_start_recreates_like_an_invalid_one() -> None:
    w = ws()
    c = container(w, 2)
    obs = Observed(containers=(c,), tokens=ObservedTokens(2, None, 2),
                   agent=registered(2, last_auth_failure=AuthFailure(
                       T0 + timedelta(seconds=2), "missing_token")))
    assert run(w, obs).recreate_reason == RecreateReason.TOKEN_REJECTED
    before_start = replace(obs, agent=registered(2, last_auth_failure=AuthFailure(
        T0 - timedelta(seconds=2), "missing_token")))
    assert run(w, before_start).recreate_reason is None
