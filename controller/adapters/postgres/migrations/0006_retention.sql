-- 0006_retention: indexes for the retention passes (Store.prune, retention.py).
-- Count limits per workspace use the existing (workspace_id, id) and
-- (workspace_id, captured_at, id) indexes; age limits need one on the time.
CREATE INDEX activity_at_idx ON activity (at);
CREATE INDEX events_at_idx ON events (at);
CREATE INDEX diagnostics_captured_at_idx ON diagnostics (captured_at);

-- Token rows that are no longer current (revoked, or superseded by a refresh), by
-- when they stopped being usable: least() skips NULLs, so a superseded token is
-- usable until its expiry, a revoked one was unusable from its revocation, and
-- a superseded token without an expiry (NULL) is never a candidate.
CREATE INDEX tokens_retired_idx ON tokens (least(revoked_at, expires_at))
    WHERE revoked_at IS NOT NULL OR superseded_at IS NOT NULL;

-- wsctl_add_event (0005) folds a repeat into the latest event it read; a
-- retention pass may delete that row (past the age limit) between the read and
-- the update. Then the repeat is recorded as a new event instead of nothing.
CREATE OR REPLACE FUNCTION wsctl_add_event(p_workspace_id text, p_at timestamptz,
                                           p_type text, p_reason text, p_message text)
RETURNS SETOF events
LANGUAGE plpgsql AS $$
DECLARE
    latest events%ROWTYPE;
    folded events%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('wsctl.events.' || p_workspace_id, 0));
    SELECT * INTO latest FROM events WHERE workspace_id = p_workspace_id
     ORDER BY id DESC LIMIT 1;
    IF FOUND AND latest.type = p_type AND latest.reason = p_reason
            AND latest.message = p_message THEN
        UPDATE events SET count = count + 1, at = greatest(at, coalesce(p_at, now()))
         WHERE id = latest.id RETURNING * INTO folded;
        IF FOUND THEN
            RETURN NEXT folded;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY INSERT INTO events (workspace_id, at, first_at, type, reason, message)
                 VALUES (p_workspace_id, coalesce(p_at, now()), coalesce(p_at, now()),
                         p_type, p_reason, p_message)
                 RETURNING *;
END
$$;
