"""What the egress proxy needs from the rest of the controller, in both modes.

- `lookup`: source address -> the workspace whose container has it on the
  workspace network (Docker's own listing, cached for `cache_seconds`; a miss
  lists again at most every `relist_seconds`) and that workspace's current
  spec.egress (the store, cached for `workspace_ttl` and forgotten at once on the
  store's change notification, or the operator's in-memory view: a spec change
  holds for the next connection). Docker gives a freed address to a new container
  only after the rest of the subnet (serial allocation), so a cached address does
  not name another workspace's container.
- `observe`: every decision is counted (`EgressMetrics`); a refusal is recorded as
  a Warning event (`EgressRefused`) and an activity row, with the host name
  redacted (a name can carry a secret: `<token>.attacker.example`). Writes run in
  the background, at most MAX_PENDING_WRITES at once (more are dropped and
  counted), and one refusal per workspace, host, port and reason per
  `quiet_seconds` is written (a loop of refusals is one row a minute, its count in the metric).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from controller.adapters.postgres import Store
from controller.api.egress_proxy import Decision, EgressMetrics, system_resolver
from controller.core import redact
from controller.core.model import EgressSpec, Workspace, WorkspaceKey
from controller.core.observed import ObservedContainer

log = logging.getLogger(__name__)

MAX_PENDING_WRITES = 256
MAX_QUIET_KEYS = 4096

FindWorkspace = Callable[[WorkspaceKey], Awaitable[Workspace | None]]
ListContainers = Callable[[], Awaitable[list[ObservedContainer]]]


class EgressAccess:
    def __init__(self, find: FindWorkspace, containers: ListContainers, sink: Store,
                 metrics: EgressMetrics, *, cache_seconds: float = 5.0,
                 relist_seconds: float = 0.5, quiet_seconds: float = 60.0,
                 workspace_ttl: float = 1.0) -> None:
        self._find = find
        self._containers = containers
        self._sink = sink
        self.metrics = metrics
        self._cache_seconds = cache_seconds
        self._relist_seconds = relist_seconds
        self._quiet_seconds = quiet_seconds
        self._workspace_ttl = workspace_ttl
        self._specs: dict[str, tuple[float, EgressSpec | None]] = {}
        """workspace id -> (read at, its egress; None: no such workspace). Bounded by
        the containers listed: entries of ids no longer listed go at each listing."""
        self._by_address: dict[str, str] = {}
        self._listed_at = float("-inf")
        self._listing: asyncio.Lock = asyncio.Lock()
        self._quiet: OrderedDict[tuple[str, str, int, str], float] = OrderedDict()
        self._pending: set[asyncio.Task[None]] = set()
        self.dropped_writes = 0

    async def _workspace_at(self, address: str) -> str | None:
        age = time.monotonic() - self._listed_at
        if address in self._by_address and age < self._cache_seconds:
            return self._by_address[address]
        async with self._listing:
            if time.monotonic() - self._listed_at >= self._relist_seconds:
                listed = await self._containers()
                self._by_address = {c.ip_address: c.workspace_id for c in listed
                                    if c.ip_address and c.workspace_id}
                self._listed_at = time.monotonic()
                alive = set(self._by_address.values())
                for gone in [w for w in self._specs if w not in alive]:
                    del self._specs[gone]
        return self._by_address.get(address)

    async def lookup(self, address: str) -> tuple[str, EgressSpec] | None:
        workspace_id = await self._workspace_at(address)
        if workspace_id is None:
            return None
        cached = self._specs.get(workspace_id)
        if cached is not None and time.monotonic() - cached[0] < self._workspace_ttl:
            egress = cached[1]
        else:
            try:
                key = WorkspaceKey.from_id(workspace_id)
            except ValueError:
                return None
            ws = await self._find(key)
            egress = None if ws is None else ws.spec.egress
            if self._workspace_ttl > 0:
                self._specs[workspace_id] = (time.monotonic(), egress)
        return None if egress is None else (workspace_id, egress)

    def forget(self, workspace_id: str | None = None) -> None:
        """A workspace changed (None: any may have): its next connection reads it anew."""
        if workspace_id is None:
            self._specs.clear()
        else:
            self._specs.pop(workspace_id, None)

    def observe(self, decision: Decision) -> None:
        self.metrics.observe(decision)
        if decision.verdict.allowed:
            return
        now = time.monotonic()
        key = (decision.workspace, decision.host, decision.port, decision.verdict.reason)
        if now - self._quiet.get(key, float("-inf")) < self._quiet_seconds:
            return
        self._quiet[key] = now
        self._quiet.move_to_end(key)
        while len(self._quiet) > MAX_QUIET_KEYS:
            self._quiet.popitem(last=False)
        if len(self._pending) >= MAX_PENDING_WRITES:
            self.dropped_writes += 1
            return
        task = asyncio.get_running_loop().create_task(self._record(decision))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _record(self, decision: Decision) -> None:
        target = redact.redact(f"{decision.host}:{decision.port}")
        reason = redact.redact(decision.verdict.reason)
        try:
            await self._sink.add_event(decision.workspace, "Warning", "EgressRefused",
                                       f"connection to {target} refused: {reason}")
            await self._sink.append_activity(
                decision.workspace, "system:egress", method="egress/connect",
                request={"target": target}, status="refused", error=reason)
        except Exception as exc:  # the store away: the metric still counted it
            log.warning("egress refusal of %s not recorded: %s", decision.workspace,
                        type(exc).__name__)

    async def close(self) -> None:
        await asyncio.gather(*self._pending, return_exceptions=True)


def resolver(environ: dict[str, str]) -> Callable[[str], Awaitable[list[str]]]:
    """The proxy's resolver: `WSCTL_EGRESS_HOSTS` (`name=address,...`, like
    /etc/hosts, for names this host's DNS does not know) first, then the system's."""
    pinned: dict[str, list[str]] = {}
    for item in environ.get("WSCTL_EGRESS_HOSTS", "").split(","):
        name, sep, address = item.strip().partition("=")
        if sep and name and address:
            pinned.setdefault(name.lower().rstrip("."), []).append(address.strip())

    async def resolve(host: str) -> list[str]:
        found = pinned.get(host.lower().rstrip("."))
        return list(found) if found else await system_resolver(host)
    return resolve
