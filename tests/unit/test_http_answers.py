"""One mapping from expected failures to HTTP answers, shared by both APIs."""

from __future__ import annotations

import logging

import pytest
from aiohttp.test_utils import make_mocked_request

from controller.api._http import (
    ENGINE_RETRY_AFTER_SECONDS,
    STORE_RETRY_AFTER_SECONDS,
    BodyError,
    HttpError,
    answer_for,
)
from controller.api.a2a import ProxyError
from controller.api.registry import Refusal
from controller.core.errors import (
    EngineUnavailableError,
    SecretUnreadableError,
    StoreUnavailableError,
    WorkspaceTerminatingError,
    WsctlError,
)

LOG = logging.getLogger("test.http")


def answer(exc: WsctlError) -> HttpError | None:
    return answer_for(exc, make_mocked_request("GET", "/x"), LOG)


def test_a_raised_answer_is_its_own() -> None:
    for raised in (HttpError(418, "teapot", "no"), ProxyError(502, "agent_unreachable", "x"),
                   Refusal(401, "invalid_token", "y"), BodyError(413, "body over 1 bytes")):
        assert answer(raised) is raised
    assert BodyError(413, "big").cls == "body_too_large"
    assert BodyError(400, "not json").cls == "invalid_body"


def test_an_unreachable_store_is_503_with_retry_after_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "test.http"):
        got = answer(StoreUnavailableError("database unavailable (refused)"))
    assert got is not None
    assert (got.status, got.cls) == (503, "store_unavailable")
    assert got.headers() == {"Retry-After": str(STORE_RETRY_AFTER_SECONDS)}
    assert "answered 503 store_unavailable" in caplog.text


def test_an_engine_that_does_not_answer_is_503_with_retry_after_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    """A restarting Docker engine is a 503 to retry, like a database restart, not a 500."""
    with caplog.at_level(logging.WARNING, "test.http"):
        got = answer(EngineUnavailableError("the Docker engine does not answer"))
    assert got is not None
    assert (got.status, got.cls) == (503, "engine_unavailable")
    assert got.headers() == {"Retry-After": str(ENGINE_RETRY_AFTER_SECONDS)}
    assert "answered 503 engine_unavailable" in caplog.text


def test_a_workspace_being_deleted_is_409() -> None:
    got = answer(WorkspaceTerminatingError("default/alice is being deleted"))
    assert got is not None
    assert (got.status, got.cls, got.message) == (409, "terminating",
                                                  "default/alice is being deleted")
    assert got.headers() == {}


def test_other_failures_have_no_answer_and_stay_500s() -> None:
    assert answer(SecretUnreadableError("x")) is None
    assert answer(WsctlError("y")) is None
