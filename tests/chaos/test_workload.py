"""The chaos workload's reading of unacknowledged requests: a 503 with Retry-After
and a 502 that blames the agent are expected under faults; any other 5xx is the
controller failing, a violation of `answers` whatever the fault."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from controller.chaos.model import RunClock
from controller.chaos.workload import Workload, outcome_of


@pytest.mark.parametrize(("status", "answer", "retry_after", "expected"), [
    (0, None, None, ("no answer", False)),
    (409, {"class": "agent_unavailable"}, None, ("HTTP 409 agent_unavailable", False)),
    (503, {"class": "engine_unavailable"}, "5",
     ("HTTP 503 engine_unavailable (Retry-After)", False)),
    (503, {"class": "store_unavailable"}, "5",
     ("HTTP 503 store_unavailable (Retry-After)", False)),
    (502, {"class": "agent_unreachable"}, None, ("HTTP 502 agent_unreachable", False)),
    (502, {"class": "answer_too_large"}, None, ("HTTP 502 answer_too_large", False)),
    (500, {"error": "Internal Server Error"}, None, ("HTTP 500", True)),
    (500, "500 Internal Server Error", None, ("HTTP 500", True)),
    (503, {"class": "store_unavailable"}, None, ("HTTP 503 store_unavailable", True)),
    (502, None, None, ("HTTP 502", True)),
    (504, None, None, ("HTTP 504", True)),
])
def test_outcome_of(status: int, answer: Any, retry_after: str | None,
                    expected: tuple[str, bool]) -> None:
    assert outcome_of(status, answer, retry_after) == expected


class ScriptedApi:
    """Answers message/send from a script, in order, then 200."""

    def __init__(self, script: list[tuple[int, Any, str | None]]) -> None:
        self.script = list(script)

    async def message_send_outcome(self, name: str, request_id: str, text: str,
                                   seconds: float) -> tuple[int, Any, str | None]:
        return self.script.pop(0) if self.script else (200, {"result": {}}, None)


async def test_the_workload_records_server_errors_apart() -> None:
    api = ScriptedApi([(500, {"error": "boom"}, None),
                       (503, {"class": "engine_unavailable"}, "5"),
                       (502, {"class": "agent_unreachable"}, None)])
    workload = Workload(cast(Any, api), RunClock(), ["w01"], "run", interval=0.001)
    workload.start()
    for _ in range(200):
        if workload.stats.acked:
            break
        await asyncio.sleep(0.005)
    await workload.stop()
    assert [(f.outcome, f.server_error) for f in workload.failed] == [
        ("HTTP 500", True), ("HTTP 503 engine_unavailable (Retry-After)", False),
        ("HTTP 502 agent_unreachable", False)]
    assert workload.stats.failures["HTTP 500"] == 1 and workload.stats.acked >= 1
