"""What the LLM gateway asks of the controller: the workspace's provider key now,
its budget, and where a call's usage goes. Both composition roots build one; they
differ in where a workspace's spec and secrets come from (the store for `wsctl run`,
the operator's view of the Kubernetes objects for `--kubernetes`).

The key is resolved per call as a reconcile resolves it, so a rotated secret (`wsctl
secret set`, a changed Kubernetes Secret) takes effect on the next call with no
recreate. Budgets count the tokens of the current UTC day in the store; a workspace
at or over its budget gets a reconcile (Degraded BudgetExhausted) on the call that
reached it and on each refused call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Protocol

from controller.core.model import Workspace, WorkspaceKey
from controller.core.usage import Usage

FindWorkspace = Callable[[WorkspaceKey], Awaitable[Workspace | None]]
ResolveKey = Callable[[Workspace], Awaitable[str | None]]


class UsageStore(Protocol):
    def record_llm_usage(self, workspace_id: str, day: date, provider: str,
                         usage: Usage, *, error: bool) -> Awaitable[None]: ...
    def llm_tokens_on(self, workspace_id: str, day: date) -> Awaitable[int]: ...


def utc_day(now: datetime) -> date:
    return now.astimezone(UTC).date()


class LlmAccess:
    """The gateway's `KeySource`, `UsageSink` and `Budget`."""

    def __init__(self, find: FindWorkspace, key: ResolveKey, usage: UsageStore,
                 wake: Callable[[WorkspaceKey], None],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.find = find
        self.key = key
        self.usage = usage
        self.wake = wake
        """Ask for a reconcile of the workspace (its Degraded BudgetExhausted)."""
        self.clock = clock

    async def _workspace(self, workspace_id: str) -> Workspace | None:
        try:
            return await self.find(WorkspaceKey.from_id(workspace_id))
        except ValueError:
            return None

    async def key_for(self, workspace_id: str) -> str | None:
        ws = await self._workspace(workspace_id)
        if ws is None or ws.spec.llm is None or ws.spec.llm.api_key is None:
            return None
        return await self.key(ws)

    async def _limit(self, workspace_id: str) -> int | None:
        ws = await self._workspace(workspace_id)
        budget = ws.spec.llm.budget if ws is not None and ws.spec.llm is not None else None
        return None if budget is None else budget.tokens_per_day

    async def allowed(self, workspace_id: str) -> bool:
        limit = await self._limit(workspace_id)
        if limit is None:
            return True
        if await self.usage.llm_tokens_on(workspace_id, utc_day(self.clock())) < limit:
            return True
        self.wake(WorkspaceKey.from_id(workspace_id))
        return False

    async def record(self, workspace_id: str, provider: str, usage: Usage, status: int,
                     error_class: str | None, seconds: float) -> None:
        day = utc_day(self.clock())
        await self.usage.record_llm_usage(workspace_id, day, provider, usage,
                                          error=error_class is not None)
        if not usage.total:
            return
        limit = await self._limit(workspace_id)
        if limit is not None and await self.usage.llm_tokens_on(workspace_id, day) >= limit:
            self.wake(WorkspaceKey.from_id(workspace_id))


def key_resolver(resolve_secrets: Callable[[Workspace], Awaitable[dict[tuple[str, str], str]]]
                 ) -> ResolveKey:
    """The workspace's spec.llm.apiKey, resolved by `resolve_secrets` (a reconcile's
    own secret resolution) at the time of the call."""
    async def key(ws: Workspace) -> str | None:
        if ws.spec.llm is None or ws.spec.llm.api_key is None:
            return None
        ref = ws.spec.llm.api_key.secret_ref
        return (await resolve_secrets(ws)).get((ref.name, ref.key))
    return key
