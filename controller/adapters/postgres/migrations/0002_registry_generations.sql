-- 0002_registry_generations: which token generation a heartbeat came with, and
-- the last rejected (401) agent request naming the workspace.
ALTER TABLE registrations
    ADD COLUMN heartbeat_generation    integer,
    ADD COLUMN auth_failure_at         timestamptz,
    ADD COLUMN auth_failure_class      text,
    ADD COLUMN auth_failure_generation integer,
    ADD CONSTRAINT registrations_auth_failure_complete
        CHECK ((auth_failure_at IS NULL) = (auth_failure_class IS NULL));

-- crash_stats: recent diagnostics of one workspace by reason.
CREATE INDEX diagnostics_workspace_reason_idx ON diagnostics (workspace_id, reason, captured_at);
