-- 0007_suspensions: a workspace the controller (idle timeout) or a user stopped
-- until someone needs it again. One row per suspended workspace: resuming deletes
-- it, so the table holds at most one row per workspace (purge deletes it too).
CREATE TABLE suspensions (
    workspace_id text        PRIMARY KEY,
    suspended_at timestamptz NOT NULL DEFAULT now(),
    reason       text        NOT NULL
);
