"""The root of wsctl's expected failures, and the store errors the API layer and
the core react to, independent of any adapter.

`WsctlError` is an expected failure (engine down, port in use, image build
failed, database unreachable, bad manifest, bad key file): its message is one
line for the user naming what failed and what to do. The CLI prints it as
`error: <message>` and exits 1, without a traceback (`--debug` or WSCTL_DEBUG=1
shows one). Anything else escaping a command is a bug and keeps its traceback.

The PostgreSQL adapter raises the store errors (and its own subclasses of
`StoreError`); the HTTP layers catch `StoreUnavailableError` without importing
the adapter (and so asyncpg).
"""

from __future__ import annotations


class WsctlError(Exception):
    """An expected failure; `str()` is one line: what failed and what to do."""


class StoreError(WsctlError):
    """A store operation failed for a reason callers handle."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached (down, restarting, connection lost); retry later."""


class WorkspaceTerminatingError(StoreError):
    """The workspace's deletion was requested and is not finished; it cannot be applied."""


class SecretUnreadableError(StoreError):
    """A stored secret exists but cannot be read (e.g. it was encrypted with another
    key). Only the workspaces that reference it are affected."""


class EngineUnavailableError(WsctlError):
    """The Docker engine cannot be reached right now (stopped, restarting); retry later.
    The API answers 503 engine_unavailable with Retry-After, as for the store."""
