"""The PostgreSQL store: desired and observed state, tokens, registry, history.

`Store.connect(dsn)` opens an asyncpg pool and applies the SQL migrations in
`migrations/` (see `apply_migrations`). Only this module and `embedded.py`
import asyncpg; database errors callers must react to are raised as the
`StoreError` subclasses below (`StoreUnavailableError` when the database
cannot be reached, `ConflictError`, `WorkspaceTerminatingError`,
`MigrationError`), never as asyncpg exceptions. Invalid arguments are
`ValueError`s.

Conventions:
* a workspace id is `<namespace>.<name>` (`WorkspaceKey.id`);
* every `at=None` argument means "the database's now()"; pass a time to record
  an event observed earlier (or to order events in tests);
* timestamps come back timezone-aware (UTC);
* list methods return newest first.

Secret values are stored encrypted (AES-256-GCM, `secretbox.py`) with the key of
the store's `KeySource`; the key never reaches the database. Tokens are stored
only as sha256 hex digests.
Purging a workspace deletes its row, tokens and registration; activity,
diagnostics and events are history and are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import re
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import asyncpg
from pydantic import ValidationError

from controller.adapters.secretbox import (
    KeySource,
    SecretBox,
    SecretDecryptError,
    SecretKeyError,
    missing_key_error,
)
from controller.core.errors import StoreError, StoreUnavailableError, WorkspaceTerminatingError
from controller.core.model import (
    ObjectMeta,
    RegisterFailure,
    SecretKeyRef,
    Workspace,
    WorkspaceKey,
    WorkspaceSpec,
    WorkspaceStatus,
)

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
NOTIFY_CHANNEL = "wsctl_workspaces"
# pg_advisory_xact_lock key serialising migrations: b"wsctlmig" as a bigint.
MIGRATION_LOCK_KEY = int.from_bytes(b"wsctlmig", "big")
HEALTHY = "healthy"
# Diagnostics reasons that mean "the container died on its own" (plan.RecreateReason values).
CRASH_REASONS: tuple[str, ...] = ("ContainerExited", "OOMKilled")
# Recreates for a new config (spec change, restart, resume): crashes before one do not
# count against the new config, as a new Pod template starts a fresh back-off.
CRASH_RESET_REASONS: tuple[str, ...] = ("ConfigChanged", "RestartRequested", "Resumed")

SourceKind = Literal["workspace", "system", "user", "webhook", "other"]
EventType = Literal["Normal", "Warning"]
EnvState = Literal["set", "unset"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_MIGRATION_FILE = re.compile(r"^(?P<version>[0-9]{4})_(?P<name>[a-z0-9_]+)\.sql$")

if TYPE_CHECKING:  # asyncpg's classes are generic only in its stubs
    from typing import TypeAlias

    _Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    _Conn: TypeAlias = asyncpg.Connection[asyncpg.Record]
    _AnyConn: TypeAlias = _Conn | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]


# ------------------------------------------------------------------ errors


# StoreError and StoreUnavailableError live in controller.core.errors (the API layer catches
# them without importing this adapter); re-exported here.


class ConflictError(StoreError):
    """A uniqueness rule was violated (e.g. a second live token for a workspace)."""


class MigrationError(StoreError):
    """The database schema does not match this wsctl's migrations."""


# Errors meaning "the database is not reachable right now", not "the query is wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    asyncpg.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
)

# ... and what opening a pool raises when the server is not one we can use.
CANNOT_CONNECT: tuple[type[BaseException], ...] = (
    *_UNAVAILABLE, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def describe_dsn(dsn: str) -> str:
    """`dsn` without its password (and query), for messages."""
    try:
        parts = urllib.parse.urlsplit(dsn)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable DSN>"
    if not parts.scheme:
        return "<unparsable DSN>"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{parts.hostname or 'localhost'}{port}{parts.path}"


def _translated(method: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
    """Raise connection-level failures as `StoreUnavailableError`."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(*args, **kwargs)
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(
                f"database unavailable ({type(exc).__name__}: {exc})") from exc

    return wrapper


# ------------------------------------------------------------------ records


@dataclass(frozen=True)
class TokenRecord:
    workspace_id: str
    generation: int
    token_hash: str
    container_id: str | None
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None
    rotation: int = 0
    """Refreshes of this generation's token before this one (0: the first)."""
    superseded_at: datetime | None = None
    """When a refresh replaced it; it stays valid until `expires_at`."""

    @property
    def live(self) -> bool:
        """Not revoked (expiry is checked separately with `usable`)."""
        return self.revoked_at is None

    def usable(self, now: datetime) -> bool:
        return self.live and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class Registration:
    workspace_id: str
    url: str | None
    agent_card: dict[str, Any] | None
    token_generation: int | None
    registered_at: datetime | None
    last_heartbeat_at: datetime | None
    heartbeat_status: str | None
    heartbeat_error_detail: str | None
    active_tasks: int | None
    uptime_seconds: float | None
    register_failure: RegisterFailure | None
    heartbeat_generation: int | None = None
    """Token generation the last heartbeat was authenticated with."""
    auth_failure_at: datetime | None = None
    """Last rejected (401) agent request naming this workspace, if any."""
    auth_failure_class: str | None = None
    auth_failure_generation: int | None = None


@dataclass(frozen=True)
class RegistryObservation:
    registration: Registration | None
    live_generation: int | None
    live_expires_at: datetime | None
    max_generation: int
    crashes: int
    last_crash: datetime | None
    live_issued_at: datetime | None = None


@dataclass(frozen=True)
class ActivityRecord:
    id: int
    workspace_id: str
    at: datetime
    source_id: uuid.UUID | None
    source_kind: SourceKind
    source: str
    method: str | None
    request: Any
    response: Any
    status: str | None
    error: str | None


@dataclass(frozen=True)
class DiagnosticsRecord:
    id: int
    workspace_id: str
    container_id: str | None
    captured_at: datetime
    reason: str
    state: dict[str, Any] | None
    exit_code: int | None
    oom_killed: bool | None
    log_tail: str | None
    env_names: dict[str, EnvState]


@dataclass(frozen=True)
class EventRecord:
    id: int
    workspace_id: str
    at: datetime
    first_at: datetime
    count: int
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime


# ------------------------------------------------------------------ pure helpers


def classify_source(source: str) -> tuple[uuid.UUID | None, SourceKind]:
    """Caller string -> (source_id, source_kind). Never raises.

    A canonical UUID is a workspace (source_id set); `system:*`, `webhook:*` and
    `user` are synthetic callers; anything else is 'other'. Only UUIDs get a
    source_id, so no caller string can fail the insert.
    """
    if _UUID.match(source):
        return uuid.UUID(source), "workspace"
    if source.startswith("system:"):
        return None, "system"
    if source.startswith("webhook:"):
        return None, "webhook"
    if source == "user":
        return None, "user"
    return None, "other"


def clean_text(value: str) -> str:
    """Text PostgreSQL accepts: no NUL characters, no lone surrogates."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def clean_json(value: Any) -> Any:
    """A JSON-ready copy of `value` that jsonb accepts (see `clean_text`)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return clean_text(str(value))


def _clean_opt(value: str | None) -> str | None:
    return None if value is None else clean_text(value)


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files `NNNN_name.sql` of `directory`, in version order."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        found[version] = Migration(version, match["name"], path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def apply_migrations(
    conn: _AnyConn, migrations: Sequence[Migration] | None = None
) -> list[int]:
    """Apply the migrations not yet recorded in `schema_migrations`; return their versions.

    One transaction under `pg_advisory_xact_lock`, so concurrent starters
    serialise and the second sees the first's work (idempotent). An applied
    migration whose file changed, or a database with versions this wsctl does
    not know, is a `MigrationError`. Migrations run inside a transaction (so
    no `CREATE INDEX CONCURRENTLY`).
    """
    wanted = list(load_migrations() if migrations is None else migrations)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer     PRIMARY KEY,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {int(r["version"]): (str(r["name"]), str(r["checksum"])) for r in rows}
        known = {m.version for m in wanted}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(
                f"the database has schema versions {unknown} that this wsctl does not know "
                "(it was used by a newer wsctl)"
            )
        done: list[int] = []
        for migration in wanted:
            if migration.version in applied:
                name, checksum = applied[migration.version]
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{name} was changed after it was "
                        "applied; add a new migration instead of editing an applied one"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version, migration.name, migration.checksum,
            )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            done.append(migration.version)
        return done


QUERY_COUNT = [0]
"""Statements sent by every Store of this process (for metrics and benchmarks)."""


def _count_query(_record: object) -> None:
    QUERY_COUNT[0] += 1


async def _reset_connection(conn: _Conn) -> None:
    """Cheaper than asyncpg's default reset (a round trip on every release).

    Pool connections hold no session state: advisory locks are transaction-
    scoped and LISTEN uses a dedicated connection. Only an open transaction
    (a caller that failed mid-way) needs undoing.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def _init_connection(conn: _Conn) -> None:
    conn.add_query_logger(_count_query)
    for type_name in ("jsonb", "json"):
        await conn.set_type_codec(
            type_name,
            schema="pg_catalog",
            encoder=_json_dumps,
            decoder=json.loads,
        )


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _spec_json(spec: WorkspaceSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def _status_json(status: WorkspaceStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def _workspace(row: asyncpg.Record) -> Workspace:
    metadata = ObjectMeta(
        name=row["name"],
        namespace=row["namespace"],
        labels=row["labels"],
        annotations=row["annotations"],
        generation=row["generation"],
        uid=str(row["uid"]),
        resource_version=str(row["resource_version"]),
        creation_timestamp=row["created_at"],
        deletion_timestamp=row["deleted_at"],
    )
    status = row["status"]
    return Workspace(
        metadata=metadata,
        spec=WorkspaceSpec.model_validate(row["spec"]),
        status=None if status is None else WorkspaceStatus.model_validate(status),
    )


def _token(row: asyncpg.Record) -> TokenRecord:
    return TokenRecord(
        workspace_id=row["workspace_id"],
        generation=row["generation"],
        token_hash=row["token_hash"],
        container_id=row["container_id"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        expires_at=row["expires_at"],
        rotation=row["rotation"],
        superseded_at=row["superseded_at"],
    )


async def _token_statement(pool: _Pool, workspace_id: str, generation: int, sql: str,
                           *args: object) -> asyncpg.Record | None:
    """Run one token-writing statement; a unique violation is a `ConflictError` naming it."""
    try:
        return await pool.fetchrow(sql, workspace_id, generation, *args)
    except asyncpg.UniqueViolationError as exc:
        raise ConflictError(
            f"token for {workspace_id} generation {generation}: "
            f"{exc.constraint_name or 'unique'} violated"
        ) from None


# Create or update a workspace's desired state; no row when its deletion is pending.
_UPSERT_WORKSPACE = """
    INSERT INTO workspaces AS w (namespace, name, spec, labels, annotations)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (namespace, name) DO UPDATE
        SET spec = EXCLUDED.spec,
            labels = EXCLUDED.labels,
            annotations = EXCLUDED.annotations
        WHERE w.deleted_at IS NULL
    RETURNING *
"""


def _upsert_args(ws: Workspace) -> tuple[object, ...]:
    meta = ws.metadata
    return (meta.namespace, meta.name, _spec_json(ws.spec), dict(meta.labels),
            dict(meta.annotations))


def _registration(row: asyncpg.Record) -> Registration:
    failure = None
    if row["register_failure_at"] is not None:
        failure = RegisterFailure.model_validate({
            "at": row["register_failure_at"],
            "class": row["register_failure_class"],
            "message": row["register_failure_message"] or "",
        })
    return Registration(
        workspace_id=row["workspace_id"],
        url=row["url"],
        agent_card=row["agent_card"],
        token_generation=row["token_generation"],
        registered_at=row["registered_at"],
        last_heartbeat_at=row["last_heartbeat_at"],
        heartbeat_status=row["heartbeat_status"],
        heartbeat_error_detail=row["heartbeat_error_detail"],
        active_tasks=row["active_tasks"],
        uptime_seconds=row["uptime_seconds"],
        register_failure=failure,
        heartbeat_generation=row["heartbeat_generation"],
        auth_failure_at=row["auth_failure_at"],
        auth_failure_class=row["auth_failure_class"],
        auth_failure_generation=row["auth_failure_generation"],
    )


def _activity(row: asyncpg.Record) -> ActivityRecord:
    return ActivityRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        at=row["at"],
        source_id=row["source_id"],
        source_kind=row["source_kind"],
        source=row["source"],
        method=row["method"],
        request=row["request"],
        response=row["response"],
        status=row["status"],
        error=row["error"],
    )


def _diagnostics(row: asyncpg.Record) -> DiagnosticsRecord:
    return DiagnosticsRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        container_id=row["container_id"],
        captured_at=row["captured_at"],
        reason=row["reason"],
        state=row["state"],
        exit_code=row["exit_code"],
        oom_killed=row["oom_killed"],
        log_tail=row["log_tail"],
        env_names=row["env_names"],
    )


def _event(row: asyncpg.Record) -> EventRecord:
    return EventRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        at=row["at"],
        first_at=row["first_at"],
        count=row["count"],
        type=row["type"],
        reason=row["reason"],
        message=row["message"],
    )


def _check_secret_ref(name: str, key: str) -> None:
    try:
        SecretKeyRef(name=name, key=key)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"invalid secret {name!r}/{key!r}: {problems}") from None


def _check_token_hash(token_hash: str) -> None:
    if not _SHA256_HEX.match(token_hash):
        raise ValueError("token_hash must be the sha256 hex digest of the token, not the token")


# ------------------------------------------------------------------ listener


WorkspaceChangeCallback = Callable[[WorkspaceKey], None]


class WorkspaceListener:
    """LISTEN on `wsctl_workspaces` over a dedicated connection.

    `callback(key)` runs on the event loop for every desired-state change
    (keep it quick: e.g. put the key on a work queue). If the connection is
    lost (database restart), it reconnects with backoff and then calls
    `on_reconnect()`: notifications sent while disconnected are lost, so the
    caller should resync everything then. A connection that died silently
    (no FIN, e.g. a network partition to an external database) is found by a
    `SELECT 1` every `health_interval_seconds`. Malformed payloads are ignored.
    """

    def __init__(
        self,
        dsn: str,
        callback: WorkspaceChangeCallback,
        on_reconnect: Callable[[], None] | None = None,
        *,
        max_backoff_seconds: float = 5.0,
        health_interval_seconds: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._callback = callback
        self._on_reconnect = on_reconnect
        self._max_backoff = max_backoff_seconds
        self._health_interval = health_interval_seconds
        self._conn: _Conn | None = None
        self._lost = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @property
    def backend_pid(self) -> int | None:
        """Server pid of the listening connection (None while disconnected)."""
        return self._conn.get_server_pid() if self.connected and self._conn else None

    async def start(self) -> None:
        """Connect and LISTEN; changes committed after this returns are delivered."""
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name="wsctl-listen")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()

    async def _connect(self) -> None:
        conn: _Conn = await asyncpg.connect(self._dsn)
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._terminated)
        self._lost.clear()
        self._conn = conn

    def _notified(
        self, _conn: object, _pid: int, _channel: str, payload: object
    ) -> None:
        try:
            key = WorkspaceKey.from_id(str(payload))
        except ValueError:
            log.warning("ignoring malformed %s payload %r", NOTIFY_CHANNEL, payload)
            return
        try:
            self._callback(key)
        except Exception:
            log.exception("workspace change callback failed for %s", key)

    def _terminated(self, conn: object) -> None:
        if not self._closed and conn is self._conn:
            self._lost.set()

    async def _supervise(self) -> None:
        while not self._closed:
            try:
                await asyncio.wait_for(self._lost.wait(), self._health_interval)
            except TimeoutError:
                if await self._healthy():
                    continue
            if self._closed:
                return
            await self._reconnect()

    async def _healthy(self) -> bool:
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=min(5.0, self._health_interval))
        except Exception as exc:
            log.info("LISTEN connection failed its health check (%s)", exc)
            return False
        return True

    async def _reconnect(self) -> None:
        old, self._conn = self._conn, None
        if old is not None and not old.is_closed():
            old.terminate()
        delay = 0.05
        while not self._closed:
            try:
                await self._connect()
                break
            except Exception as exc:
                log.info("LISTEN reconnect failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
        if self._on_reconnect is not None and not self._closed:
            try:
                self._on_reconnect()
            except Exception:
                log.exception("on_reconnect callback failed")


# ------------------------------------------------------------------ store


class Store:
    """Async access to the wsctl database over an asyncpg pool."""

    def __init__(self, pool: _Pool, dsn: str, secret_key: KeySource | None = None) -> None:
        self._pool = pool
        self._dsn = dsn
        self._listeners: list[WorkspaceListener] = []
        self._secret_key = secret_key

    @property
    def dsn(self) -> str:
        """The connection string (for tools that read the database directly)."""
        return self._dsn

    @classmethod
    @_translated
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float | None = 60.0,
        secret_key: KeySource | None = None,
    ) -> Store:
        """Open a pool on `dsn`, apply pending migrations, encrypt legacy secrets.

        `secret_key` encrypts and decrypts secret values (`open_store` passes the
        data dir's); without one the secret methods that need a key fail, naming
        the problem. A malformed $WSCTL_SECRET_KEY or an unsafe key file fails
        here, at start, not at the first secret read.
        """
        if secret_key is not None:
            secret_key.check()
        try:
            pool: _Pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                command_timeout=command_timeout,
                init=_init_connection,
                reset=_reset_connection,
            )
        except CANNOT_CONNECT as exc:
            raise StoreUnavailableError(
                f"cannot connect to the database at {describe_dsn(dsn)}: "
                f"{' '.join(str(exc).split()) or type(exc).__name__}") from exc
        try:
            async with pool.acquire() as conn:
                await apply_migrations(conn)
            store = cls(pool, dsn, secret_key)
            await store.encrypt_plaintext_secrets()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        for listener in self._listeners:
            await listener.close()
        self._listeners.clear()
        await self._pool.close()

    @_translated
    async def applied_migrations(self) -> list[AppliedMigration]:
        rows = await self._pool.fetch(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
        )
        return [AppliedMigration(r["version"], r["name"], r["checksum"], r["applied_at"])
                for r in rows]

    # -------------------------------------------------------------- workspaces

    @_translated
    async def apply_workspace(self, ws: Workspace) -> Workspace:
        """Create or update the desired state (spec, labels, annotations).

        `metadata.generation` is bumped only when the spec changes; status,
        uid and creationTimestamp are kept. Raises `WorkspaceTerminatingError`
        if the workspace's deletion was requested and is not finished.
        """
        row = await self._pool.fetchrow(_UPSERT_WORKSPACE, *_upsert_args(ws))
        if row is None:
            raise WorkspaceTerminatingError(
                f"workspace {ws.key} is being deleted; apply it again once it is gone"
            )
        return _workspace(row)

    @_translated
    async def apply_workspaces(self, workspaces: Sequence[Workspace]
                               ) -> list[tuple[int | None, Workspace]]:
        """`apply_workspace` for each, all in one transaction: all or none.

        Returns (generation before, or None if it was created; the stored
        workspace) per document. `WorkspaceTerminatingError` for the first one
        being deleted, and nothing is applied. Their NOTIFYs go out at commit.
        """
        applied: list[tuple[int | None, Workspace]] = []
        async with self._pool.acquire() as conn, conn.transaction():
            for ws in workspaces:
                meta = ws.metadata
                before = await conn.fetchval(
                    "SELECT generation FROM workspaces WHERE namespace = $1 AND name = $2 "
                    "FOR UPDATE", meta.namespace, meta.name)
                row = await conn.fetchrow(_UPSERT_WORKSPACE, *_upsert_args(ws))
                if row is None:
                    raise WorkspaceTerminatingError(
                        f"workspace {ws.key} is being deleted; nothing was applied (apply "
                        "again once it is gone)")
                applied.append((before, _workspace(row)))
        return applied

    @_translated
    async def get_workspace(self, namespace: str, name: str) -> Workspace | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM workspaces WHERE namespace = $1 AND name = $2", namespace, name
        )
        return None if row is None else _workspace(row)

    @_translated
    async def list_workspaces(self, namespace: str | None = None) -> list[Workspace]:
        """All workspaces (including those being deleted), by namespace and name."""
        rows = await self._pool.fetch(
            "SELECT * FROM workspaces WHERE $1::text IS NULL OR namespace = $1 "
            "ORDER BY namespace, name",
            namespace,
        )
        return [_workspace(r) for r in rows]

    @_translated
    async def request_delete(self, namespace: str, name: str) -> bool:
        """Mark the workspace for deletion (idempotent). False if it does not exist."""
        row = await self._pool.fetchrow(
            "UPDATE workspaces SET deleted_at = coalesce(deleted_at, now()) "
            "WHERE namespace = $1 AND name = $2 RETURNING 1",
            namespace, name,
        )
        return row is not None

    @_translated
    async def purge_workspace(self, namespace: str, name: str) -> bool:
        """Delete a workspace whose deletion was requested, with its tokens and
        registration. A workspace not marked for deletion is left alone (False)."""
        workspace_id = WorkspaceKey(namespace, name).id
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM workspaces WHERE namespace = $1 AND name = $2 "
                "AND deleted_at IS NOT NULL RETURNING 1",
                namespace, name,
            )
            if row is None:
                return False
            await conn.execute("DELETE FROM tokens WHERE workspace_id = $1", workspace_id)
            await conn.execute("DELETE FROM registrations WHERE workspace_id = $1", workspace_id)
            return True

    @_translated
    async def forget_workspace(self, workspace_id: str) -> None:
        """Drop the tokens and registration of a workspace whose desired state lives
        elsewhere (Kubernetes mode: the Workspace object is gone); history is kept."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM tokens WHERE workspace_id = $1", workspace_id)
            await conn.execute("DELETE FROM registrations WHERE workspace_id = $1", workspace_id)

    @_translated
    async def write_status(self, namespace: str, name: str, status: WorkspaceStatus) -> bool:
        """Replace the observed status; never bumps generation. False if no such workspace."""
        row = await self._pool.fetchrow(
            "UPDATE workspaces SET status = $3 WHERE namespace = $1 AND name = $2 RETURNING 1",
            namespace, name, _status_json(status),
        )
        return row is not None

    @_translated
    async def listen_workspace_changes(
        self,
        callback: WorkspaceChangeCallback,
        *,
        on_reconnect: Callable[[], None] | None = None,
    ) -> WorkspaceListener:
        """Start a `WorkspaceListener`; it is closed by `close()` of the listener or store."""
        listener = WorkspaceListener(self._dsn, callback, on_reconnect)
        await listener.start()
        self._listeners.append(listener)
        return listener

    # -------------------------------------------------------------- secrets

    def _secret_box(self) -> SecretBox:
        """The box of this store's key, creating the key file if there is none yet."""
        if self._secret_key is None:
            raise SecretKeyError("this store was opened without a secret key source; "
                                 "secrets cannot be encrypted or decrypted")
        return self._secret_key.require()

    def _open_secret(self, row: asyncpg.Record) -> str:
        name, key = row["name"], row["key"]
        if row["value_enc"] is None:  # written before 0003 and not yet encrypted
            return str(row["value"])
        box = None if self._secret_key is None else self._secret_key.load(create=False)
        if box is None:
            if self._secret_key is None:
                raise SecretDecryptError(
                    f"secret {name}/{key} cannot be decrypted: this store was opened "
                    "without a secret key source")
            raise SecretDecryptError(
                missing_key_error(name, key, row["key_id"], self._secret_key))
        return box.open(name, key, bytes(row["value_enc"]), row["key_id"])

    @_translated
    async def set_secret(self, name: str, key: str, value: str) -> None:
        """Store `value` encrypted; the plaintext never reaches the database."""
        _check_secret_ref(name, key)
        if "\x00" in value:
            raise ValueError(f"secret {name}/{key}: a value cannot contain NUL characters")
        box = self._secret_box()
        await self._pool.execute(
            """
            INSERT INTO secrets (name, key, value, value_enc, key_id) VALUES ($1, $2, NULL, $3, $4)
            ON CONFLICT (name, key) DO UPDATE
                SET value = NULL, value_enc = EXCLUDED.value_enc, key_id = EXCLUDED.key_id,
                    updated_at = now()
            """,
            name, key, box.seal(name, key, value), box.key_id,
        )

    @_translated
    async def get_secrets(self, refs: Collection[tuple[str, str]] | None = None
                          ) -> dict[tuple[str, str], str]:
        """The secrets named by `refs` (every secret if None), decrypted; absent ones
        are left out. `SecretDecryptError` (naming each secret that cannot be
        decrypted, the key ids and where the current key comes from) if one of
        them cannot be: a row that does not decrypt fails only its readers."""
        if refs is None:
            rows = await self._pool.fetch(
                "SELECT name, key, value, value_enc, key_id FROM secrets")
        else:
            rows = await self._pool.fetch(
                "SELECT name, key, value, value_enc, key_id FROM secrets WHERE (name, key) IN "
                "(SELECT * FROM unnest($1::text[], $2::text[]))",
                [r[0] for r in refs], [r[1] for r in refs])
        found: dict[tuple[str, str], str] = {}
        problems: list[str] = []
        for r in rows:
            try:
                found[(r["name"], r["key"])] = self._open_secret(r)
            except SecretDecryptError as exc:
                problems.append(str(exc))
        if problems:
            raise SecretDecryptError("; ".join(problems))
        return found

    @_translated
    async def encrypt_plaintext_secrets(self) -> int:
        """Encrypt rows stored in plaintext before migration 0003; return how many.

        One transaction; rows are locked, so concurrent starters encrypt each row
        once. Needs the key only when such rows exist (the key file is created
        then). Without a key source the rows are left as they are.
        """
        if await self._pool.fetchval(
                "SELECT NOT EXISTS (SELECT 1 FROM secrets WHERE value IS NOT NULL)"):
            return 0
        if self._secret_key is None:
            log.warning("secrets stored in plaintext are left so: no secret key source")
            return 0
        box = self._secret_box()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT name, key, value FROM secrets WHERE value IS NOT NULL FOR UPDATE")
            await conn.executemany(
                "UPDATE secrets SET value = NULL, value_enc = $3, key_id = $4 "
                "WHERE name = $1 AND key = $2",
                [(r["name"], r["key"], box.seal(r["name"], r["key"], r["value"]), box.key_id)
                 for r in rows],
            )
        if rows:
            log.info("encrypted %d secret(s) stored in plaintext (key %s, %s)",
                     len(rows), box.key_id, box.source)
        return len(rows)

    @_translated
    async def list_secret_keys(self) -> list[tuple[str, str, datetime]]:
        """(name, key, updated_at) of every secret, sorted; never the values."""
        rows = await self._pool.fetch(
            "SELECT name, key, updated_at FROM secrets ORDER BY name, key"
        )
        return [(r["name"], r["key"], r["updated_at"]) for r in rows]

    @_translated
    async def delete_secret(self, name: str, key: str) -> bool:
        row = await self._pool.fetchrow(
            "DELETE FROM secrets WHERE name = $1 AND key = $2 RETURNING 1", name, key
        )
        return row is not None

    # -------------------------------------------------------------- tokens

    @_translated
    async def insert_token(
        self,
        workspace_id: str,
        generation: int,
        token_hash: str,
        container_id: str | None = None,
        *,
        expires_at: datetime | None = None,
        revoke_others: bool = True,
    ) -> TokenRecord:
        """Record a new live token (its sha256 hex, never the token).

        With `revoke_others` (the default) other live tokens of the workspace
        are revoked in the same transaction. The database allows one live
        token per workspace and one row per (workspace, generation): a
        violation raises `ConflictError`.
        """
        _check_token_hash(token_hash)
        # One statement (atomic, one round trip): the INSERT reads the whole
        # revoking UPDATE first (count(*)), so the old live row is no longer
        # live when the one-live-token index checks the new one.
        revoke = ("UPDATE tokens SET revoked_at = now() WHERE workspace_id = $1 "
                  "AND revoked_at IS NULL AND generation <> $2 RETURNING 1"
                  if revoke_others else "SELECT 1 WHERE false")
        row = await _token_statement(
            self._pool, workspace_id, generation,
            f"""
            WITH revoked AS ({revoke})
            INSERT INTO tokens (workspace_id, generation, rotation, token_hash, container_id,
                                expires_at)
            SELECT $1, $2, 0, $3, $4, $5 FROM (SELECT count(*) FROM revoked) AS done
            RETURNING *
            """,  # noqa: S608 - one of two constant texts
            token_hash, container_id, expires_at)
        assert row is not None
        return _token(row)

    @_translated
    async def rotate_token(self, workspace_id: str, generation: int, token_hash: str, *,
                           expires_at: datetime | None) -> TokenRecord:
        """Refresh the current token of `generation` without a new generation.

        The new row becomes current; the one it replaces is marked superseded but
        stays valid until its own expiry, so an agent that has not re-read its
        token file yet keeps working. `ConflictError` when `generation` is not
        the workspace's current generation (a recreate got there first).
        """
        _check_token_hash(token_hash)
        row = await _token_statement(
            self._pool, workspace_id, generation,
            """
            WITH current AS (
                UPDATE tokens SET superseded_at = now() WHERE workspace_id = $1
                   AND generation = $2 AND revoked_at IS NULL AND superseded_at IS NULL
                RETURNING rotation, container_id)
            INSERT INTO tokens (workspace_id, generation, rotation, token_hash, container_id,
                                expires_at)
            SELECT $1, $2, rotation + 1, $3, container_id, $4 FROM current
            RETURNING *
            """,
            token_hash, expires_at)
        if row is None:
            raise ConflictError(f"token for {workspace_id} generation {generation}: not the "
                                "current generation, nothing to refresh")
        return _token(row)

    @_translated
    async def set_token_container(
        self, workspace_id: str, generation: int, container_id: str
    ) -> bool:
        row = await self._pool.fetchrow(
            "UPDATE tokens SET container_id = $3 WHERE workspace_id = $1 AND generation = $2 "
            "RETURNING 1",
            workspace_id, generation, container_id,
        )
        return row is not None

    @_translated
    async def revoke_tokens(self, workspace_id: str, except_generation: int | None = None) -> int:
        """Revoke live tokens of the workspace (but `except_generation`); how many."""
        result = await self._pool.execute(
            "UPDATE tokens SET revoked_at = now() WHERE workspace_id = $1 "
            "AND revoked_at IS NULL AND ($2::integer IS NULL OR generation <> $2)",
            workspace_id, except_generation,
        )
        return int(result.rsplit(" ", 1)[-1])

    @_translated
    async def live_token(self, workspace_id: str) -> TokenRecord | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM tokens WHERE workspace_id = $1 AND revoked_at IS NULL "
            "AND superseded_at IS NULL", workspace_id
        )
        return None if row is None else _token(row)

    @_translated
    async def find_token(self, token_hash: str) -> TokenRecord | None:
        """The token with this hash, live or revoked (to tell stale from invalid)."""
        row = await self._pool.fetchrow("SELECT * FROM tokens WHERE token_hash = $1", token_hash)
        return None if row is None else _token(row)

    @_translated
    async def latest_token_generation(self, workspace_id: str) -> int:
        """Highest token generation ever recorded for the workspace (0 if none)."""
        value = await self._pool.fetchval(
            "SELECT coalesce(max(generation), 0) FROM tokens WHERE workspace_id = $1",
            workspace_id,
        )
        return int(value)

    # -------------------------------------------------------------- registry

    @_translated
    async def record_register(
        self,
        workspace_id: str,
        url: str,
        agent_card: Mapping[str, Any],
        token_generation: int,
        *,
        at: datetime | None = None,
    ) -> Registration:
        """A successful register: stores the registration and clears the failure
        marker (and an auth-failure marker older than this register). A register
        for another token generation (a new container) also clears the heartbeat
        fields, which described the old container."""
        row = await self._pool.fetchrow(
            """
            INSERT INTO registrations AS r (workspace_id, url, agent_card, token_generation,
                                            registered_at)
            VALUES ($1, $2, $3, $4, coalesce($5, now()))
            ON CONFLICT (workspace_id) DO UPDATE SET
                url = EXCLUDED.url,
                agent_card = EXCLUDED.agent_card,
                token_generation = EXCLUDED.token_generation,
                registered_at = EXCLUDED.registered_at,
                register_failure_at = NULL,
                register_failure_class = NULL,
                register_failure_message = NULL,
                auth_failure_at = CASE WHEN r.auth_failure_at <= EXCLUDED.registered_at
                    THEN NULL ELSE r.auth_failure_at END,
                auth_failure_class = CASE WHEN r.auth_failure_at <= EXCLUDED.registered_at
                    THEN NULL ELSE r.auth_failure_class END,
                auth_failure_generation = CASE WHEN r.auth_failure_at <= EXCLUDED.registered_at
                    THEN NULL ELSE r.auth_failure_generation END,
                heartbeat_generation = CASE WHEN r.token_generation IS DISTINCT FROM
                    EXCLUDED.token_generation THEN NULL ELSE r.heartbeat_generation END,
                last_heartbeat_at = CASE WHEN r.token_generation IS DISTINCT FROM
                    EXCLUDED.token_generation THEN NULL ELSE r.last_heartbeat_at END,
                heartbeat_status = CASE WHEN r.token_generation IS DISTINCT FROM
                    EXCLUDED.token_generation THEN NULL ELSE r.heartbeat_status END,
                heartbeat_error_detail = CASE WHEN r.token_generation IS DISTINCT FROM
                    EXCLUDED.token_generation THEN NULL ELSE r.heartbeat_error_detail END,
                active_tasks = CASE WHEN r.token_generation IS DISTINCT FROM
                    EXCLUDED.token_generation THEN NULL ELSE r.active_tasks END,
                uptime_seconds = CASE WHEN r.token_generation IS DISTINCT FROM
                    EXCLUDED.token_generation THEN NULL ELSE r.uptime_seconds END
            RETURNING *
            """,
            workspace_id, clean_text(url), clean_json(agent_card), token_generation, at,
        )
        assert row is not None
        return _registration(row)

    @_translated
    async def record_register_failure(
        self, workspace_id: str, cls: str, message: str, *, at: datetime | None = None
    ) -> Registration:
        """Set the register-failure marker (class such as `blocked_private_url`)."""
        row = await self._pool.fetchrow(
            """
            INSERT INTO registrations AS r (workspace_id, register_failure_at,
                                            register_failure_class, register_failure_message)
            VALUES ($1, coalesce($2, now()), $3, $4)
            ON CONFLICT (workspace_id) DO UPDATE SET
                register_failure_at = EXCLUDED.register_failure_at,
                register_failure_class = EXCLUDED.register_failure_class,
                register_failure_message = EXCLUDED.register_failure_message
            RETURNING *
            """,
            workspace_id, at, clean_text(cls), clean_text(message),
        )
        assert row is not None
        return _registration(row)

    @_translated
    async def record_heartbeat(
        self,
        workspace_id: str,
        status: str,
        *,
        error_detail: str | None = None,
        active_tasks: int | None = None,
        uptime_seconds: float | None = None,
        at: datetime | None = None,
        generation: int | None = None,
    ) -> Registration:
        """Record a heartbeat, atomically clearing the register-failure marker
        when `status` is 'healthy' and the heartbeat is newer than the marker.
        `generation` is the token generation the heartbeat authenticated with.

        A heartbeat older than the last recorded one (delivered out of order)
        changes nothing.
        """
        row = await self._pool.fetchrow(
            """
            INSERT INTO registrations AS r (workspace_id, last_heartbeat_at, heartbeat_status,
                                            heartbeat_error_detail, active_tasks,
                                            uptime_seconds, heartbeat_generation)
            VALUES ($1, coalesce($2, now()), $3, $4, $5, $6, $8)
            ON CONFLICT (workspace_id) DO UPDATE SET
                heartbeat_generation = CASE WHEN EXCLUDED.last_heartbeat_at
                        >= coalesce(r.last_heartbeat_at, '-infinity')
                    THEN EXCLUDED.heartbeat_generation ELSE r.heartbeat_generation END,
                last_heartbeat_at = CASE WHEN EXCLUDED.last_heartbeat_at
                        >= coalesce(r.last_heartbeat_at, '-infinity')
                    THEN EXCLUDED.last_heartbeat_at ELSE r.last_heartbeat_at END,
                heartbeat_status = CASE WHEN EXCLUDED.last_heartbeat_at
                        >= coalesce(r.last_heartbeat_at, '-infinity')
                    THEN EXCLUDED.heartbeat_status ELSE r.heartbeat_status END,
                heartbeat_error_detail = CASE WHEN EXCLUDED.last_heartbeat_at
                        >= coalesce(r.last_heartbeat_at, '-infinity')
                    THEN EXCLUDED.heartbeat_error_detail ELSE r.heartbeat_error_detail END,
                active_tasks = CASE WHEN EXCLUDED.last_heartbeat_at
                        >= coalesce(r.last_heartbeat_at, '-infinity')
                    THEN EXCLUDED.active_tasks ELSE r.active_tasks END,
                uptime_seconds = CASE WHEN EXCLUDED.last_heartbeat_at
                        >= coalesce(r.last_heartbeat_at, '-infinity')
                    THEN EXCLUDED.uptime_seconds ELSE r.uptime_seconds END,
                register_failure_at = CASE WHEN EXCLUDED.heartbeat_status = $7
                        AND EXCLUDED.last_heartbeat_at > r.register_failure_at
                    THEN NULL ELSE r.register_failure_at END,
                register_failure_class = CASE WHEN EXCLUDED.heartbeat_status = $7
                        AND EXCLUDED.last_heartbeat_at > r.register_failure_at
                    THEN NULL ELSE r.register_failure_class END,
                register_failure_message = CASE WHEN EXCLUDED.heartbeat_status = $7
                        AND EXCLUDED.last_heartbeat_at > r.register_failure_at
                    THEN NULL ELSE r.register_failure_message END
            RETURNING *
            """,
            workspace_id, at, clean_text(status), _clean_opt(error_detail), active_tasks,
            uptime_seconds, HEALTHY, generation,
        )
        assert row is not None
        return _registration(row)

    @_translated
    async def record_auth_failure(
        self, workspace_id: str, cls: str, generation: int | None, *, at: datetime | None = None,
        known: bool = False,
    ) -> None:
        """Mark a rejected (401) agent request naming the workspace (class such as
        `stale_token`; `generation` of the presented token when it was a known one).

        Only for workspaces that exist: the id comes from an unauthenticated
        request, and must not create rows for arbitrary strings. `known=True`:
        the caller checked that it exists (Kubernetes mode keeps desired state
        outside this database).
        """
        await self._pool.execute(
            """
            INSERT INTO registrations AS r (workspace_id, auth_failure_at, auth_failure_class,
                                            auth_failure_generation)
            SELECT $1, coalesce($2, now()), $3, $4
            WHERE $5 OR EXISTS (SELECT 1 FROM workspaces w
                                WHERE w.namespace || '.' || w.name = $1)
            ON CONFLICT (workspace_id) DO UPDATE SET
                auth_failure_at = EXCLUDED.auth_failure_at,
                auth_failure_class = EXCLUDED.auth_failure_class,
                auth_failure_generation = EXCLUDED.auth_failure_generation
            """,
            workspace_id, at, clean_text(cls), generation, known,
        )

    @_translated
    async def get_registration(self, workspace_id: str) -> Registration | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM registrations WHERE workspace_id = $1", workspace_id
        )
        return None if row is None else _registration(row)

    @_translated
    async def list_registrations(self) -> list[Registration]:
        rows = await self._pool.fetch("SELECT * FROM registrations ORDER BY workspace_id")
        return [_registration(r) for r in rows]

    # -------------------------------------------------------------- activity

    @_translated
    async def append_activity(
        self,
        workspace_id: str,
        source: str,
        *,
        method: str | None = None,
        request: Any = None,
        response: Any = None,
        status: str | None = None,
        error: str | None = None,
        at: datetime | None = None,
    ) -> int:
        """Append one activity row; returns its id.

        `source` is the raw caller: a UUID is stored in source_id with kind
        'workspace'; any other string (`system:*`, `webhook:*`, `user`, or
        garbage) is stored as-is with a NULL source_id (see `classify_source`).
        Text and JSON are cleaned of what PostgreSQL rejects (NUL, lone
        surrogates), so the caller string can never fail the insert.
        """
        source_id, kind = classify_source(source)
        value = await self._pool.fetchval(
            """
            INSERT INTO activity (workspace_id, at, source_id, source_kind, source, method,
                                  request, response, status, error)
            VALUES ($1, coalesce($2, now()), $3, $4, $5, $6, $7, $8, $9, $10)
            RETURNING id
            """,
            clean_text(workspace_id), at, source_id, kind, clean_text(source),
            _clean_opt(method), clean_json(request), clean_json(response), _clean_opt(status),
            _clean_opt(error),
        )
        return int(value)

    @_translated
    async def list_activity(self, workspace_id: str, limit: int = 50) -> list[ActivityRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM activity WHERE workspace_id = $1 ORDER BY id DESC LIMIT $2",
            workspace_id, limit,
        )
        return [_activity(r) for r in rows]

    # -------------------------------------------------------------- diagnostics

    @_translated
    async def add_diagnostics(
        self,
        workspace_id: str,
        *,
        container_id: str | None,
        reason: str,
        state: Mapping[str, Any] | None = None,
        exit_code: int | None = None,
        oom_killed: bool | None = None,
        log_tail: str | None = None,
        env_names: Mapping[str, EnvState] | None = None,
        captured_at: datetime | None = None,
    ) -> int:
        """Store diagnostics of one container; returns the row id.

        `env_names` maps variable names to 'set' or 'unset' (never values);
        anything else is a ValueError (and a CHECK violation in the database).
        """
        names = dict(env_names or {})
        bad = sorted(n for n, v in names.items() if v not in ("set", "unset"))
        if bad:
            raise ValueError(f"env_names values must be 'set' or 'unset' (not for {bad})")
        value = await self._pool.fetchval(
            """
            INSERT INTO diagnostics (workspace_id, container_id, captured_at, reason, state,
                                     exit_code, oom_killed, log_tail, env_names)
            VALUES ($1, $2, coalesce($3, now()), $4, $5, $6, $7, $8, $9)
            RETURNING id
            """,
            workspace_id, container_id, captured_at, clean_text(reason),
            None if state is None else clean_json(state), exit_code, oom_killed,
            _clean_opt(log_tail), clean_json(names),
        )
        return int(value)

    @_translated
    async def crash_stats(
        self, workspace_id: str, since: datetime, reasons: Sequence[str] = CRASH_REASONS
    ) -> tuple[int, datetime | None]:
        """(number, latest time) of crash diagnostics captured at or after `since`.

        A crash is a diagnostics row whose reason is one of `reasons` (by default
        the recreate reasons for a container that exited or was OOM-killed); a
        container captured twice (a recreate interrupted and redone) is one crash,
        at its first capture. Crashes before the last recreate for a new config
        (`CRASH_RESET_REASONS`) are not counted.
        """
        row = await self._pool.fetchrow(
            "SELECT count(*) AS n, max(first_at) AS last FROM ("
            " SELECT min(captured_at) AS first_at FROM diagnostics"
            " WHERE workspace_id = $1 AND captured_at >= $2 AND reason = ANY($3::text[])"
            " AND captured_at > coalesce((SELECT max(captured_at) FROM diagnostics"
            "  WHERE workspace_id = $1 AND reason = ANY($4::text[])), '-infinity')"
            " GROUP BY coalesce(container_id, id::text)) c",
            workspace_id, since, list(reasons), list(CRASH_RESET_REASONS),
        )
        assert row is not None
        return int(row["n"]), row["last"]

    @_translated
    async def observe_registry(self, workspace_id: str, crashes_since: datetime,
                               reasons: Sequence[str] = CRASH_REASONS) -> RegistryObservation:
        """Registration, live token, highest generation and recent crashes in one statement.

        The reconciler's per-workspace read of the registry side: one round trip
        instead of four.
        """
        row = await self._pool.fetchrow(
            """
            SELECT r.*, t.generation AS live_generation, t.expires_at AS live_expires_at,
                   t.created_at AS live_issued_at,
                   (SELECT coalesce(max(generation), 0) FROM tokens
                     WHERE workspace_id = w.wid) AS max_generation,
                   c.n AS crashes, c.last AS last_crash
              FROM (SELECT $1::text AS wid) w
              LEFT JOIN registrations r ON r.workspace_id = w.wid
              LEFT JOIN tokens t ON t.workspace_id = w.wid AND t.revoked_at IS NULL
                                    AND t.superseded_at IS NULL
             CROSS JOIN LATERAL (
                   SELECT count(*) AS n, max(first_at) AS last FROM (
                          SELECT min(d.captured_at) AS first_at FROM diagnostics d
                           WHERE d.workspace_id = w.wid AND d.captured_at >= $2
                             AND d.reason = ANY($3::text[])
                             AND d.captured_at > coalesce((
                                 SELECT max(n.captured_at) FROM diagnostics n
                                  WHERE n.workspace_id = w.wid
                                    AND n.reason = ANY($4::text[])), '-infinity')
                           GROUP BY coalesce(d.container_id, d.id::text)) x) c
            """,
            workspace_id, crashes_since, list(reasons), list(CRASH_RESET_REASONS),
        )
        assert row is not None
        return RegistryObservation(
            registration=None if row["workspace_id"] is None else _registration(row),
            live_generation=row["live_generation"],
            live_expires_at=row["live_expires_at"],
            live_issued_at=row["live_issued_at"],
            max_generation=int(row["max_generation"]),
            crashes=int(row["crashes"]),
            last_crash=row["last_crash"],
        )

    @_translated
    async def latest_diagnostics(self, workspace_id: str) -> DiagnosticsRecord | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM diagnostics WHERE workspace_id = $1 "
            "ORDER BY captured_at DESC, id DESC LIMIT 1",
            workspace_id,
        )
        return None if row is None else _diagnostics(row)

    # -------------------------------------------------------------- events

    @_translated
    async def add_event(
        self,
        workspace_id: str,
        type_: EventType,
        reason: str,
        message: str = "",
        *,
        at: datetime | None = None,
    ) -> EventRecord:
        """Record an event. A repeat of the workspace's latest event (same type,
        reason and message) increments its `count` and moves `at` instead."""
        if type_ not in ("Normal", "Warning"):
            raise ValueError(f"event type must be Normal or Warning, not {type_!r}")
        message = clean_text(message)
        reason = clean_text(reason)
        # One round trip: migration 0005's function takes a per-workspace advisory
        # lock, then folds a repeat of the latest event or inserts a new one.
        row = await self._pool.fetchrow(
            "SELECT * FROM wsctl_add_event($1, $2, $3, $4, $5)",
            workspace_id, at, type_, reason, message,
        )
        assert row is not None
        return _event(row)

    @_translated
    async def list_events(self, workspace_id: str, limit: int = 50) -> list[EventRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM events WHERE workspace_id = $1 ORDER BY id DESC LIMIT $2",
            workspace_id, limit,
        )
        return [_event(r) for r in rows]


__all__ = [
    "CRASH_REASONS",
    "CRASH_RESET_REASONS",
    "HEALTHY",
    "NOTIFY_CHANNEL",
    "ActivityRecord",
    "AppliedMigration",
    "ConflictError",
    "DiagnosticsRecord",
    "EventRecord",
    "EventType",
    "Migration",
    "MigrationError",
    "Registration",
    "SourceKind",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "TokenRecord",
    "WorkspaceListener",
    "WorkspaceTerminatingError",
    "apply_migrations",
    "classify_source",
    "clean_json",
    "clean_text",
    "load_migrations",
]
