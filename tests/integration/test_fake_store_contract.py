"""The unit tests' FakeStore behaves like the PostgreSQL store where the handlers depend on it.

Each story runs against both stores and must give the same answers, so the fast
unit tests of the registry, admin API and executor cannot drift from production.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from controller.adapters.postgres import ConflictError, Store, WorkspaceTerminatingError
from controller.core.model import PURGE_ANNOTATION
from tests.integration.test_store import T0, make_workspace, sha
from tests.unit.fakes import FakeStore

pytestmark = pytest.mark.postgres

WS = "default.alice"
URL = "http://wsctl-default.alice-g1:8000/"
CARD = {"name": "alice", "skills": []}


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


async def registry_story(store: Store | FakeStore) -> list[Any]:
    out: list[Any] = []
    await store.apply_workspace(make_workspace())
    out.append(await store.record_register_failure(WS, "blocked_private_url", "10.1.2.3",
                                                   at=at(0)))
    out.append(await store.record_heartbeat(WS, "healthy", at=at(-1)))      # older: kept
    out.append(await store.record_heartbeat(WS, "healthy", at=at(0)))       # same time: kept
    out.append(await store.record_heartbeat(WS, "unhealthy", error_detail="llm-auth",
                                            active_tasks=0, uptime_seconds=1.5, generation=1,
                                            at=at(5)))                      # unhealthy: kept
    out.append(await store.record_heartbeat(WS, "healthy", active_tasks=2, generation=1,
                                            at=at(10)))                     # cleared
    out.append(await store.record_heartbeat(WS, "unhealthy", at=at(7)))     # out of order
    await store.record_auth_failure(WS, "stale_token", 1, at=at(11))
    await store.record_auth_failure("default.ghost", "invalid_token", None)
    await store.record_auth_failure("garbage", "invalid_token", None)
    out.append(await store.get_registration(WS))
    out.append(await store.get_registration("default.ghost"))
    out.append(await store.record_register(WS, URL, CARD, 1, at=at(12)))   # clears both markers
    out.append(await store.record_register_failure(WS, "invalid_agent_card", "no name",
                                                   at=at(13)))
    out.append(await store.record_register(WS, URL, CARD, 2, at=at(14)))   # new generation
    await store.record_auth_failure(WS, "invalid_token", None, at=at(20))
    out.append(await store.record_register(WS, URL, CARD, 2, at=at(15)))   # newer failure kept
    out.append(await store.record_heartbeat("default.bob", "healthy", at=at(1)))  # first row
    return out


async def test_registry_rules_match(store: Store) -> None:
    assert await registry_story(FakeStore()) == await registry_story(store)


def token_view(record: Any) -> Any:
    if record is None:
        return None
    return (record.workspace_id, record.generation, record.token_hash, record.container_id,
            record.revoked_at is not None, record.expires_at, record.rotation,
            record.superseded_at is not None)


async def token_story(store: Store | FakeStore) -> list[Any]:
    out: list[Any] = []
    out.append(token_view(await store.insert_token(WS, 1, sha("one"), "c1")))
    out.append(token_view(await store.insert_token(WS, 2, sha("two"), None,
                                                   expires_at=at(60))))
    out.append(token_view(await store.find_token(sha("one"))))   # revoked, still found
    out.append(token_view(await store.find_token(sha("nope"))))
    out.append(token_view(await store.live_token(WS)))
    refused: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.insert_token(WS, 3, "not-a-hash"),
        lambda: store.insert_token(WS, 2, sha("again")),                 # same generation
        lambda: store.insert_token("default.bob", 1, sha("two")),        # same hash
        lambda: store.insert_token(WS, 3, sha("three"), revoke_others=False),  # two live
    ]
    for insert in refused:
        with pytest.raises((ValueError, ConflictError)) as caught:
            await insert()
        out.append(caught.type)
    # A refresh: a new current row of the same generation; the old one superseded,
    # not revoked (valid until it expires).
    out.append(token_view(await store.rotate_token(WS, 2, sha("two-r1"), expires_at=at(90))))
    out.append(token_view(await store.find_token(sha("two"))))
    out.append(token_view(await store.live_token(WS)))
    with pytest.raises(ConflictError) as stale:
        await store.rotate_token(WS, 1, sha("one-r1"), expires_at=None)  # not current
    out.append(stale.type)
    out.append(await store.revoke_tokens(WS))  # both rows of generation 2
    out.append(await store.revoke_tokens(WS))
    out.append(token_view(await store.live_token(WS)))
    with pytest.raises(ConflictError):
        await store.rotate_token(WS, 2, sha("two-r2"), expires_at=None)  # all revoked
    return out


async def test_token_rules_match(store: Store) -> None:
    assert await token_story(FakeStore()) == await token_story(store)


def workspace_view(ws: Any) -> Any:
    if ws is None:
        return None
    return (str(ws.key), ws.metadata.generation, ws.metadata.labels, ws.spec,
            ws.metadata.deletion_timestamp is not None)


async def workspace_story(store: Store | FakeStore) -> list[Any]:
    out: list[Any] = []
    out.append(workspace_view(await store.apply_workspace(make_workspace())))
    out.append(workspace_view(await store.apply_workspace(make_workspace())))
    out.append(workspace_view(await store.apply_workspace(make_workspace(labels={"a": "b"}))))
    out.append(workspace_view(await store.apply_workspace(make_workspace(paused=True))))
    out.append(await store.purge_workspace("default", "alice"))   # not marked: kept
    out.append(await store.request_delete("default", "alice"))
    out.append(await store.request_delete("default", "ghost"))
    out.append(await store.request_delete("default", "alice", purge=True))  # --purge later
    deleting = await store.get_workspace("default", "alice")
    assert deleting is not None and deleting.metadata.annotations[PURGE_ANNOTATION] == "true"
    out.append(dict(deleting.metadata.annotations))
    with pytest.raises(WorkspaceTerminatingError):
        await store.apply_workspace(make_workspace())
    # Several documents: one transaction. bob is new, alice is being deleted: neither.
    with pytest.raises(WorkspaceTerminatingError, match="nothing was applied"):
        await store.apply_workspaces([make_workspace("bob"), make_workspace()])
    out.append(workspace_view(await store.get_workspace("default", "bob")))
    out.append([(before, workspace_view(ws)) for before, ws in await store.apply_workspaces(
        [make_workspace("bob"), make_workspace("carol"), make_workspace("bob", paused=True)])])
    out.append(workspace_view(await store.get_workspace("default", "alice")))
    out.append(await store.purge_workspace("default", "alice"))
    out.append(workspace_view(await store.get_workspace("default", "alice")))
    return out


async def test_workspace_rules_match(store: Store) -> None:
    assert await workspace_story(FakeStore()) == await workspace_story(store)


@pytest.mark.parametrize("tasks", [-1, 2**31])
async def test_both_refuse_active_tasks_outside_the_column(store: Store, tasks: int) -> None:
    for either in (FakeStore(), store):
        with pytest.raises(Exception):  # noqa: B017 - ValueError vs asyncpg's errors
            await either.record_heartbeat(WS, "healthy", active_tasks=tasks)
