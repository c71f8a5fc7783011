"""The PostgreSQL store: desired and observed state, tokens, registry, history.

`Store.connect(dsn)` opens an asyncpg pool and applies the SQL migrations in
`migrations/` (see `apply_migrations`). Only this package and `embedded.py`
import asyncpg; database errors callers must react to are raised as the
`StoreError` subclasses re-exported below (`StoreUnavailableError` when the
database cannot be reached, `ConflictError`, `WorkspaceTerminatingError`,
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
diagnostics and events are history and are kept, within the limits of the
retention pass (`Store.prune`), which also deletes token rows that can no
longer authenticate, after a grace period.

Modules: `base` (errors, connection setup, text cleaning), `migrate` (the
migrations runner), `listener` (LISTEN/NOTIFY), `rows` (records), one mixin
per table family (`workspaces`, `secrets`, `tokens`, `registry`, `history`, `llm`:
the LLM gateway's credentials and usage), `retention` (the pruning pass) and `store`
(the `Store` they make up). Import from the package.
"""

from controller.adapters.postgres.base import (
    CANNOT_CONNECT,
    QUERY_COUNT,
    ConflictError,
    MigrationError,
    clean_json,
    clean_text,
    describe_dsn,
)
from controller.adapters.postgres.history import (
    CRASH_REASONS,
    CRASH_RESET_REASONS,
    classify_source,
)
from controller.adapters.postgres.listener import (
    NOTIFY_CHANNEL,
    WorkspaceChangeCallback,
    WorkspaceListener,
)
from controller.adapters.postgres.llm import LlmCredentialRecord, UsageRecord
from controller.adapters.postgres.migrate import (
    MIGRATION_LOCK_KEY,
    MIGRATIONS_DIR,
    AppliedMigration,
    Migration,
    apply_migrations,
    load_migrations,
)
from controller.adapters.postgres.retention import PRUNED_TABLES
from controller.adapters.postgres.rows import (
    ActivityRecord,
    DiagnosticsRecord,
    EnvState,
    EventRecord,
    EventType,
    Registration,
    SourceKind,
    TokenRecord,
)
from controller.adapters.postgres.store import Store
from controller.core.errors import StoreError, StoreUnavailableError, WorkspaceTerminatingError
from controller.core.observed import HEALTHY

__all__ = [
    "CANNOT_CONNECT",
    "CRASH_REASONS",
    "CRASH_RESET_REASONS",
    "HEALTHY",
    "MIGRATIONS_DIR",
    "MIGRATION_LOCK_KEY",
    "NOTIFY_CHANNEL",
    "PRUNED_TABLES",
    "QUERY_COUNT",
    "ActivityRecord",
    "AppliedMigration",
    "ConflictError",
    "DiagnosticsRecord",
    "EnvState",
    "EventRecord",
    "EventType",
    "LlmCredentialRecord",
    "Migration",
    "MigrationError",
    "Registration",
    "SourceKind",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "TokenRecord",
    "UsageRecord",
    "WorkspaceChangeCallback",
    "WorkspaceListener",
    "WorkspaceTerminatingError",
    "apply_migrations",
    "classify_source",
    "clean_json",
    "clean_text",
    "describe_dsn",
    "load_migrations",
]
