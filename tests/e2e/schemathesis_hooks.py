"""A schemathesis check with the chaos run's rule for 5xx (loaded through
SCHEMATHESIS_HOOKS by tests/e2e/test_api_fuzz.py): a 503 with Retry-After (store
or engine away) asks to retry and a 502 naming an agent failure blames the agent;
any other 5xx is the controller failing. Also: how a tar body is sent."""

from __future__ import annotations

import json
from typing import Any

import schemathesis

from controller.chaos.workload import outcome_of


@schemathesis.check
def not_a_controller_error(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 500:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    retry_after = next(iter(response.headers.get("retry-after") or
                            response.headers.get("Retry-After") or []), None)
    outcome, server_error = outcome_of(response.status_code, body, retry_after)
    if server_error:
        raise AssertionError(f"the controller failed: {outcome}: {response.content[:300]!r}")
    return None


# The tar body of PUT .../files: sent as the bytes generated (a garbage tar is a
# 422 from the container's tar, never a controller error).
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
