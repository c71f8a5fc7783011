"""What the LLM gateway asks of the controller: the workspace's provider key now,
its budget, and where a call's usage goes. Both composition roots build one; they
differ in where a workspace's spec and secrets come from (the store for `wsctl run`,
the operator's view of the Kubernetes objects for `--kubernetes`).

The key is resolved per call as a reconcile resolves it, so a rotated secret (`wsctl
secret set`, a changed Kubernetes Secret) takes effect on the next call with no
recreate. Budgets count the tokens of the current UTC day in the store; a workspace
at or over its budget gets a reconcile (Degraded BudgetExhausted) on the call that
reached it and on each refused call.

Off the call's path, because each SQL round trip is about a third of a millisecond
here (`make bench`, LLM gateway): the workspace itself is looked up at most once per
`WORKSPACE_TTL` seconds per workspace, unless `forget` hears of a change first
(`wsctl run` forgets on the store's change notifications, so a budget raise is
seen by the next call; the credential, checked per call in the store, is what ends
a deleted or recreated workspace's access), and usage is written after the answer by
a background task, its tokens counted as pending toward the budget until written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Protocol

from controller.core.model import Workspace, WorkspaceKey
from controller.core.usage import Usage

log = logging.getLogger("wsctl.llm_gateway")

FindWorkspace = Callable[[WorkspaceKey], Awaitable[Workspace | None]]
WORKSPACE_TTL = 1.0
MAX_CACHED_WORKSPACES = 4096
MAX_PENDING_WRITES = 1024
"""Usage writes in flight at most; beyond, a call's record waits for a free slot (so a
slow database slows the end of the gateway's handlers, and memory stays bounded)."""
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
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 workspace_ttl: float = WORKSPACE_TTL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.find = find
        self.key = key
        self.usage = usage
        self.wake = wake
        """Ask for a reconcile of the workspace (its Degraded BudgetExhausted)."""
        self.clock = clock
        self.workspace_ttl = workspace_ttl
        self.monotonic = monotonic
        self._workspaces: OrderedDict[str, tuple[float, Workspace | None]] = OrderedDict()
        self._pending: dict[tuple[str, date], int] = {}
        """Tokens recorded but not yet written, per (workspace, day)."""
        self._writes: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_PENDING_WRITES)

    async def _workspace(self, workspace_id: str) -> Workspace | None:
        now = self.monotonic()
        cached = self._workspaces.get(workspace_id)
        if cached is not None and now - cached[0] < self.workspace_ttl:
            return cached[1]
        try:
            ws = await self.find(WorkspaceKey.from_id(workspace_id))
        except ValueError:
            ws = None
        self._workspaces[workspace_id] = (now, ws)
        self._workspaces.move_to_end(workspace_id)
        while len(self._workspaces) > MAX_CACHED_WORKSPACES:
            self._workspaces.popitem(last=False)
        return ws

    async def key_for(self, workspace_id: str) -> str | None:
        ws = await self._workspace(workspace_id)
        if ws is None or ws.spec.llm is None or ws.spec.llm.api_key is None:
            return None
        return await self.key(ws)

    async def _limit(self, workspace_id: str) -> int | None:
        ws = await self._workspace(workspace_id)
        budget = ws.spec.llm.budget if ws is not None and ws.spec.llm is not None else None
        return None if budget is None else budget.tokens_per_day

    def forget(self, workspace_id: str | None = None) -> None:
        """The workspace changed (None: any may have): look it up again at its next call."""
        if workspace_id is None:
            self._workspaces.clear()
        else:
            self._workspaces.pop(workspace_id, None)

    async def _used(self, workspace_id: str, day: date) -> int:
        """The day's tokens: written, and recorded but not yet written."""
        written = await self.usage.llm_tokens_on(workspace_id, day)
        return written + self._pending.get((workspace_id, day), 0)

    async def allowed(self, workspace_id: str) -> bool:
        limit = await self._limit(workspace_id)
        if limit is None:
            return True
        if await self._used(workspace_id, utc_day(self.clock())) < limit:
            return True
        self.wake(WorkspaceKey.from_id(workspace_id))
        return False

    async def record(self, workspace_id: str, provider: str, usage: Usage, status: int,
                     error_class: str | None, seconds: float) -> None:
        """Counted as pending at once; written by a background task (`close` waits).
        Returns at once unless MAX_PENDING_WRITES writes are in flight: then when one
        ends, so the tasks (and their memory) stay bounded."""
        await self._slots.acquire()
        day = utc_day(self.clock())
        slot = (workspace_id, day)
        self._pending[slot] = self._pending.get(slot, 0) + usage.total
        task = asyncio.get_running_loop().create_task(
            self._write(workspace_id, day, provider, usage, error_class is not None))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, workspace_id: str, day: date, provider: str, usage: Usage,
                     error: bool) -> None:
        slot = (workspace_id, day)
        try:
            await self.usage.record_llm_usage(workspace_id, day, provider, usage,
                                              error=error)
        except Exception as exc:  # the answer is sent; the loss is logged, never raised
            log.warning("%s: LLM usage not recorded (%s)", workspace_id, type(exc).__name__)
        finally:
            self._slots.release()
            left = self._pending.get(slot, 0) - usage.total
            if left > 0:
                self._pending[slot] = left
            else:
                self._pending.pop(slot, None)
        if not usage.total:
            return
        try:
            limit = await self._limit(workspace_id)
            if limit is not None and await self._used(workspace_id, day) >= limit:
                self.wake(WorkspaceKey.from_id(workspace_id))
        except Exception as exc:
            log.warning("%s: LLM budget not checked (%s)", workspace_id, type(exc).__name__)

    async def close(self) -> None:
        """Wait for the usage writes still in flight."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)


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
