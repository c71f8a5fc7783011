-- 0004_token_rotation: tokens with an expiry are refreshed in place (like
-- projected service-account tokens), without a new container generation.
-- A refresh adds a row with the next `rotation` of the same generation and
-- marks the previous one superseded; the superseded token stays valid until
-- its own expiry, so an agent that has not re-read its token file yet keeps
-- working. A recreate still revokes every row of the older generations.
ALTER TABLE tokens
    ADD COLUMN rotation      integer NOT NULL DEFAULT 0,
    ADD COLUMN superseded_at timestamptz,
    ADD CONSTRAINT tokens_rotation_nonnegative CHECK (rotation >= 0);

ALTER TABLE tokens DROP CONSTRAINT tokens_pkey;
ALTER TABLE tokens ADD CONSTRAINT tokens_pkey PRIMARY KEY (workspace_id, generation, rotation);

-- One current token per workspace: live (unrevoked) and not superseded.
DROP INDEX tokens_one_live_per_workspace;
CREATE UNIQUE INDEX tokens_one_current_per_workspace
    ON tokens (workspace_id) WHERE revoked_at IS NULL AND superseded_at IS NULL;
