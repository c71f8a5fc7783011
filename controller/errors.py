"""Store errors the API layer and the core react to, independent of any adapter.

The PostgreSQL adapter raises these (and its own subclasses of `StoreError`);
the HTTP layers catch `StoreUnavailableError` without importing the adapter
(and so asyncpg).
"""

from __future__ import annotations


class StoreError(Exception):
    """A store operation failed for a reason callers handle."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached (down, restarting, connection lost); retry later."""


class WorkspaceTerminatingError(StoreError):
    """The workspace's deletion was requested and is not finished; it cannot be applied."""


class SecretUnreadableError(StoreError):
    """A stored secret exists but cannot be read (e.g. it was encrypted with another
    key). Only the workspaces that reference it are affected."""
