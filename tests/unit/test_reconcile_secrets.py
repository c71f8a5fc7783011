"""Secret resolution in the reconciler: only the workspace's own references are read,
and one that cannot be read is a named configuration error of that workspace only."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from controller.core.errors import SecretUnreadableError
from controller.core.projection import Projection, ProjectionError
from controller.core.settings import PlatformSettings
from controller.reconcile.execute import Executor
from controller.reconcile.reconciler import Reconciler
from tests.unit.fakes import FakeEngine, FakeStore
from tests.unit.helpers import minimax, workspace

UNREADABLE = ("minimax", "api-key")


class SecretsStore:
    """The store as projection sees it: one secret readable, one not."""

    def __init__(self) -> None:
        self.asked: list[set[tuple[str, str]] | None] = []

    async def get_secrets(self, refs: Collection[tuple[str, str]] | None = None
                          ) -> dict[tuple[str, str], str]:
        self.asked.append(None if refs is None else set(refs))
        if refs is None or UNREADABLE in refs:
            raise SecretUnreadableError("secret minimax/api-key cannot be decrypted: it was "
                                        "encrypted with key aaaa, the current key is bbbb")
        return {ref: "sk-readable" for ref in refs}

    async def llm_tokens_on(self, workspace_id: str, day: Any) -> int:
        return 0

    async def observe_registry(self, *args: Any) -> Any:
        raise AssertionError("not used by project()")


def reconciler(store: SecretsStore, environ: dict[str, str] | None = None) -> Reconciler:
    calls: list[Any] = []
    executor = Executor(FakeEngine(calls=calls), FakeStore(calls=calls), host_gateway="gw")
    return Reconciler(store, FakeEngine(calls=calls), executor, PlatformSettings(),
                      environ or {},
                      clock=lambda: datetime.now(UTC))


async def test_unreadable_secret_is_a_projection_error_naming_it() -> None:
    store = SecretsStore()
    result = await reconciler(store).project(minimax())
    assert isinstance(result, ProjectionError)
    assert "secret minimax/api-key cannot be decrypted" in str(result)
    assert store.asked == [{UNREADABLE}]  # only its own references, never every secret


async def test_a_workspace_with_other_secrets_is_unaffected() -> None:
    store = SecretsStore()
    ws = workspace("bob", model="MiniMax-M3", llm={
        "provider": "minimax", "access": "direct",
        "apiKey": {"secretRef": {"name": "other", "key": "k"}}})
    result = await reconciler(store).project(ws)
    assert isinstance(result, Projection)
    assert result.env["MINIMAX_API_KEY"].value == "sk-readable"
    assert store.asked == [{("other", "k")}]


async def test_secrets_from_the_environment_override_and_spare_the_store_read() -> None:
    store = SecretsStore()
    env = {"WSCTL_SECRET_MINIMAX_API_KEY": "sk-from-env"}
    result = await reconciler(store, env).project(minimax(access="direct"))
    assert isinstance(result, Projection)  # the unreadable stored copy is not even read
    assert result.env["MINIMAX_API_KEY"].value == "sk-from-env"
    assert store.asked == []
