"""Wake-on-request: a message or an exec to a suspended workspace wakes it first.

The suspension is cleared, the reconciler is told, and the caller waits until
the workspace is Online on a new container (within its startupTimeoutSeconds);
then its request goes on and is answered, not refused. Requests that arrive
while a wake is under way wait for that same wake: one wake per workspace at a
time, however many callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from controller.api._http import HttpError
from controller.core.model import Phase, Workspace

log = logging.getLogger("wsctl.wake")

POLL_SECONDS = 0.05
WAKE_MARGIN_SECONDS = 5.0
"""Beyond startupTimeoutSeconds: the reconcile that starts the container."""


class WakeStore(Protocol):
    def resume(self, workspace_id: str) -> Awaitable[bool]: ...
    def suspend(self, workspace_id: str, reason: str) -> Awaitable[bool]: ...
    def get_workspace(self, namespace: str, name: str) -> Awaitable[Workspace | None]: ...


class WakeError(HttpError):
    """The workspace did not come back in time; the API answers it as is."""


class Waker:
    def __init__(self, store: WakeStore, kick: Callable[[str], None],
                 reconciled: Callable[[str], Awaitable[None]], *,
                 observe: Callable[[float], None] | None = None) -> None:
        self.store = store
        self.kick = kick
        """Tell the reconciler now (a wake must not wait for the next resync)."""
        self.reconciled = reconciled
        """Trigger a reconcile and return once one that began after the call is done."""
        self.observe = observe
        """Seconds from the wake to the workspace Online (a metric)."""
        self._waking: dict[str, asyncio.Task[bool]] = {}

    def __len__(self) -> int:
        return len(self._waking)

    async def suspend(self, ws: Workspace, reason: str) -> bool:
        """Record the suspension and tell the reconciler; False if it already was."""
        done = await self.store.suspend(ws.key.id, reason)
        if done:
            self.kick(ws.key.id)
            log.info("%s: suspend requested", ws.key)
        return done

    async def ensure_awake(self, ws: Workspace, why: str = "a request arrived") -> bool:
        """Wake the workspace if it is suspended and wait until it is Online.
        True if it had to be woken; raises WakeError if it did not come back.
        One statement when it is not suspended (the suspension is cleared if set)."""
        workspace_id = ws.key.id
        task = self._waking.get(workspace_id)
        if task is None:
            task = asyncio.create_task(self._wake(ws, why), name=f"wake-{workspace_id}")
            self._waking[workspace_id] = task
            task.add_done_callback(lambda _: self._waking.pop(workspace_id, None))
        return await asyncio.shield(task)

    async def _wake(self, before: Workspace, why: str) -> bool:
        key = before.key
        if not await self.store.resume(key.id):
            return False
        started = time.monotonic()
        timeout = before.spec.startup_timeout_seconds + WAKE_MARGIN_SECONDS
        log.info("%s: waking (%s while suspended)", key, why)
        deadline = started + timeout
        # A status written before the suspension was cleared says nothing: the
        # suspension may not have been acted on yet (then the workspace simply stays
        # Online), or its plan may be running now (then the wake follows it). The
        # first reconcile that begins after the clearing settles which.
        with contextlib.suppress(TimeoutError):  # judged below, against the same deadline
            await asyncio.wait_for(self.reconciled(key.id), timeout)
        while time.monotonic() < deadline:
            ws = await self.store.get_workspace(key.namespace, key.name)
            status = ws.status if ws is not None else None
            if ws is None or ws.metadata.deletion_timestamp is not None:
                raise WakeError(404, "not_found", f"workspace {key} is gone")
            if status is not None and status.phase == Phase.ONLINE:
                seconds = time.monotonic() - started
                log.info("%s: awake in %.2fs", key, seconds)
                if self.observe is not None:
                    self.observe(seconds)
                return True
            await asyncio.sleep(POLL_SECONDS)
        raise WakeError(504, "wake_timeout",
                        f"{key} did not come back within {timeout:.0f}s of being woken "
                        "(startupTimeoutSeconds plus the reconcile)")
