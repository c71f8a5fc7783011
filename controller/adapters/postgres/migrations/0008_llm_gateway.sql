-- 0008_llm_gateway: the LLM gateway (issue 15).
--
-- llm_credentials: one row per container generation of a gateway-mode workspace.
-- Only the sha256 of a credential is stored, never the credential. It follows the
-- agent token of its generation: revoked when that token is (recreate, suspend,
-- delete), and pruned with the same grace (retention.py).
CREATE TABLE llm_credentials (
    workspace_id    text        NOT NULL,
    generation      integer     NOT NULL,
    credential_hash text        NOT NULL,
    provider        text        NOT NULL,
    base_url        text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    CONSTRAINT llm_credentials_pkey PRIMARY KEY (workspace_id, generation),
    CONSTRAINT llm_credentials_hash_key UNIQUE (credential_hash),
    CONSTRAINT llm_credentials_generation_positive CHECK (generation >= 1),
    CONSTRAINT llm_credentials_hash_sha256 CHECK (credential_hash ~ '^[0-9a-f]{64}$')
);
CREATE INDEX llm_credentials_revoked_idx ON llm_credentials (revoked_at)
    WHERE revoked_at IS NOT NULL;

-- llm_usage: per workspace, UTC day and provider, what its LLM calls through the
-- gateway used. One row per (workspace, day, provider), updated in place by each
-- call; rows older than the retention's usage days are pruned.
CREATE TABLE llm_usage (
    workspace_id          text   NOT NULL,
    day                   date   NOT NULL,
    provider              text   NOT NULL,
    requests              bigint NOT NULL DEFAULT 0,
    errors                bigint NOT NULL DEFAULT 0,
    input_tokens          bigint NOT NULL DEFAULT 0,
    output_tokens         bigint NOT NULL DEFAULT 0,
    cache_creation_tokens bigint NOT NULL DEFAULT 0,
    cache_read_tokens     bigint NOT NULL DEFAULT 0,
    CONSTRAINT llm_usage_pkey PRIMARY KEY (workspace_id, day, provider)
);
CREATE INDEX llm_usage_day_idx ON llm_usage (day);
