"""Pure helpers of the PostgreSQL store: caller classification, text cleaning, migrations."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from controller.adapters.postgres import (
    MigrationError,
    classify_source,
    clean_json,
    clean_text,
    load_migrations,
)

UID = "3f2b8c1e-9a4d-4c57-8e0f-1a2b3c4d5e6f"


@pytest.mark.parametrize(("source", "expected"), [
    (UID, (uuid.UUID(UID), "workspace")),
    (UID.upper(), (uuid.UUID(UID), "workspace")),
    ("system:restart-context", (None, "system")),
    ("system:", (None, "system")),
    ("webhook:github", (None, "webhook")),
    ("user", (None, "user")),
    ("user:alice", (None, "other")),
    ("", (None, "other")),
    ("System:restart", (None, "other")),
    (" " + UID, (None, "other")),
    (UID.replace("-", ""), (None, "other")),  # only the canonical form is a UUID
    ("{" + UID + "}", (None, "other")),
    ("default.alice", (None, "other")),
    ("\x00\ud800", (None, "other")),
])
def test_classify_source(source: str, expected: tuple[uuid.UUID | None, str]) -> None:
    assert classify_source(source) == expected


def test_clean_text_and_json_remove_what_postgres_rejects() -> None:
    assert clean_text("plain") == "plain"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("x\ud800y") == "x?y"
    assert clean_json({"k\x00": ["v\x00", 1, 2.5, True, None, ("t",)], "o": object}) == {
        "k\ufffd": ["v\ufffd", 1, 2.5, True, None, ["t"]], "o": str(object)}


def test_shipped_migrations_are_numbered_from_one() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_bad_migration_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("SELECT 1")
    (tmp_path / "2_bad.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)
    (tmp_path / "2_bad.sql").unlink()
    (tmp_path / "0001_again.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="used twice"):
        load_migrations(tmp_path)


async def test_a_connection_caught_mid_shutdown_is_store_unavailable_not_a_500() -> None:
    """asyncpg's InternalClientError ("cannot switch to state 12") during a PostgreSQL
    restart answered the chaos workload 500; it means the database is going away."""
    from asyncpg import InternalClientError

    from controller.adapters.postgres.base import _translated
    from controller.core.errors import StoreUnavailableError

    @_translated
    async def query() -> None:
        raise InternalClientError("cannot switch to state 12; another operation (2) is in "
                                  "progress")

    with pytest.raises(StoreUnavailableError, match="database unavailable"):
        await query()
