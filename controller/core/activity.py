"""Requests in flight to each workspace in this process, and when the last one was seen.

Idle suspend (spec.idleTimeoutSeconds) reads the activity log, whose rows are
written when a request is answered; a long request would look idle while it
runs. The A2A proxy (and exec) mark each request here from its start to its
end, and the reconciler counts a workspace with a request in flight as active
now. Pure: no I/O; bounded (the least recently seen workspaces are forgotten).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

LIMIT = 10_000


class RecentActivity:
    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 limit: int = LIMIT) -> None:
        self._clock = clock
        self._limit = limit
        self._seen: OrderedDict[str, tuple[int, datetime]] = OrderedDict()

    def _set(self, workspace_id: str, in_flight: int) -> None:
        self._seen[workspace_id] = (max(in_flight, 0), self._clock())
        self._seen.move_to_end(workspace_id)
        while len(self._seen) > self._limit:
            self._seen.popitem(last=False)

    @contextmanager
    def request(self, workspace_id: str) -> Iterator[None]:
        """Around one request to the workspace's agent (or an exec)."""
        self._set(workspace_id, self._seen.get(workspace_id, (0, self._clock()))[0] + 1)
        try:
            yield
        finally:
            self._set(workspace_id, self._seen.get(workspace_id, (1, self._clock()))[0] - 1)

    def last(self, workspace_id: str) -> datetime | None:
        """Now while a request is in flight, else when the last one began or ended."""
        found = self._seen.get(workspace_id)
        if found is None:
            return None
        in_flight, at = found
        return self._clock() if in_flight else at

    def forget(self, workspace_id: str) -> None:
        self._seen.pop(workspace_id, None)

    def __len__(self) -> int:
        return len(self._seen)
