-- 0005_add_event_function: recording an event in one round trip instead of five
-- (BEGIN, lock, read the latest, insert or fold, COMMIT). Same rules: writers
-- of one workspace's events are serialised by a transaction-level advisory
-- lock; a repeat of the latest event (type, reason, message) increments its
-- count and moves `at`. In PL/pgSQL each statement takes a new snapshot (READ
-- COMMITTED), so the read after the lock sees what the previous writer committed.
CREATE FUNCTION wsctl_add_event(p_workspace_id text, p_at timestamptz, p_type text,
                                p_reason text, p_message text)
RETURNS SETOF events
LANGUAGE plpgsql AS $$
DECLARE
    latest events%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('wsctl.events.' || p_workspace_id, 0));
    SELECT * INTO latest FROM events WHERE workspace_id = p_workspace_id
     ORDER BY id DESC LIMIT 1;
    IF FOUND AND latest.type = p_type AND latest.reason = p_reason
            AND latest.message = p_message THEN
        RETURN QUERY UPDATE events SET count = count + 1,
                                       at = greatest(at, coalesce(p_at, now()))
                      WHERE id = latest.id RETURNING *;
    ELSE
        RETURN QUERY INSERT INTO events (workspace_id, at, first_at, type, reason, message)
                     VALUES (p_workspace_id, coalesce(p_at, now()), coalesce(p_at, now()),
                             p_type, p_reason, p_message)
                     RETURNING *;
    END IF;
END
$$;
