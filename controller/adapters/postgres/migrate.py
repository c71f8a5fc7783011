"""The schema migrations runner: the SQL files of `migrations/`, applied once.

`load_migrations` reads the `NNNN_name.sql` files; `apply_migrations` applies
those not yet recorded in `schema_migrations`, in one transaction under an
advisory lock, and refuses a database whose applied migrations differ.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from controller.adapters.postgres.base import MigrationError, log

if TYPE_CHECKING:
    from controller.adapters.postgres.base import _AnyConn

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock key serialising migrations: b"wsctlmig" as a bigint.
MIGRATION_LOCK_KEY = int.from_bytes(b"wsctlmig", "big")
_MIGRATION_FILE = re.compile(r"^(?P<version>[0-9]{4})_(?P<name>[a-z0-9_]+)\.sql$")


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
