"""Which part of the controller the work in progress is for: the origin a cost is
counted under (`wsctl_db_queries_total{origin}`: SQL statements by origin).

The origin is a context variable, so each asyncio task carries its own: a task
starts with the value of the task that created it, and `working_for` sets it
for the rest of a block. It is set where work enters the controller:

- `resync`: the standalone driver's periodic pass over the fleet (its list);
- `reconcile`: one workspace's reconcile, whatever woke it (both drivers);
- `registry`: agent register and heartbeat requests;
- `api`: admin API requests (the CLI's), `metrics`: /metrics scrapes;
- `retention`: the pruning pass;
- `other`: anything else (start-up, migrations, the demo workspace).

The adapters read it (`current()`) when they count; nothing here performs I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

RESYNC: Final = "resync"
RECONCILE: Final = "reconcile"
REGISTRY: Final = "registry"
API: Final = "api"
METRICS: Final = "metrics"
RETENTION: Final = "retention"
OTHER: Final = "other"

ORIGINS: Final = (RESYNC, RECONCILE, REGISTRY, API, METRICS, RETENTION, OTHER)
"""Every origin: /metrics exports each one from the start (a series that appears only
after its first statement would read as a jump from nothing)."""

_current: ContextVar[str] = ContextVar("wsctl_origin", default=OTHER)


def current() -> str:
    """The origin of the work this task is doing now."""
    return _current.get()


@contextmanager
def working_for(origin: str) -> Iterator[None]:
    """Count what runs in this block (and in tasks it creates) under `origin`."""
    if origin not in ORIGINS:
        raise ValueError(f"unknown origin {origin!r}; one of {', '.join(ORIGINS)}")
    token = _current.set(origin)
    try:
        yield
    finally:
        _current.reset(token)
