-- 0009_controller_keys: keys the controller itself makes and every process on this
-- database must share (replicas, `wsctl run` after a restart). One row per purpose;
-- the first process that needs a key inserts a random one, the others read it.
-- `a2a`: the HMAC key of the credentials the controller presents on agents' A2A
-- ports (controller.core.tokens.a2a_credential); whoever reads this table can make
-- them, as whoever can write `workspaces` can already run any agent.
CREATE TABLE controller_keys (
    name       text        PRIMARY KEY,
    value      bytea       NOT NULL CHECK (octet_length(value) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
