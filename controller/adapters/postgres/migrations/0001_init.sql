-- 0001_init: the wsctl store.
-- Applied once, inside one transaction, by controller.adapters.postgres.apply_migrations.
-- Workspace ids elsewhere are '<namespace>.<name>' (a '.' never occurs in a DNS label).

-- ------------------------------------------------------------------ workspaces
CREATE TABLE workspaces (
    namespace        text        NOT NULL,
    name             text        NOT NULL,
    uid              uuid        NOT NULL DEFAULT gen_random_uuid(),
    spec             jsonb       NOT NULL,
    generation       bigint      NOT NULL DEFAULT 1,
    resource_version bigint      NOT NULL DEFAULT 1,
    status           jsonb,
    labels           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    annotations      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    CONSTRAINT workspaces_pkey PRIMARY KEY (namespace, name),
    CONSTRAINT workspaces_uid_key UNIQUE (uid),
    CONSTRAINT workspaces_namespace_dns1123
        CHECK (length(namespace) <= 63 AND namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'),
    CONSTRAINT workspaces_name_dns1123
        CHECK (length(name) <= 63 AND name ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'),
    CONSTRAINT workspaces_generation_positive CHECK (generation >= 1),
    CONSTRAINT workspaces_spec_object CHECK (jsonb_typeof(spec) = 'object'),
    CONSTRAINT workspaces_status_object CHECK (status IS NULL OR jsonb_typeof(status) = 'object'),
    CONSTRAINT workspaces_labels_object CHECK (jsonb_typeof(labels) = 'object'),
    CONSTRAINT workspaces_annotations_object CHECK (jsonb_typeof(annotations) = 'object')
);

-- Label selectors (`wsctl get -l team=a`): labels @> '{"team": "a"}'.
CREATE INDEX workspaces_labels_idx ON workspaces USING gin (labels jsonb_path_ops);
-- Deletions the reconciler still has to finish.
CREATE INDEX workspaces_terminating_idx ON workspaces (deleted_at) WHERE deleted_at IS NOT NULL;

-- metadata.generation moves only when the spec changes (jsonb equality, so key
-- order and formatting do not count); resourceVersion and updated_at move on
-- every real change (spec, labels, annotations, status, deletion), not on a
-- no-op write. uid and created_at are immutable.
CREATE FUNCTION wsctl_workspaces_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.uid := OLD.uid;
    NEW.created_at := OLD.created_at;
    IF NEW.spec IS DISTINCT FROM OLD.spec THEN
        NEW.generation := OLD.generation + 1;
    ELSE
        NEW.generation := OLD.generation;
    END IF;
    IF (NEW.spec, NEW.labels, NEW.annotations, NEW.status, NEW.deleted_at)
       IS DISTINCT FROM (OLD.spec, OLD.labels, OLD.annotations, OLD.status, OLD.deleted_at) THEN
        NEW.resource_version := OLD.resource_version + 1;
        NEW.updated_at := now();
    ELSE
        NEW.resource_version := OLD.resource_version;
        NEW.updated_at := OLD.updated_at;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER workspaces_before_update
    BEFORE UPDATE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION wsctl_workspaces_before_update();

-- NOTIFY wsctl_workspaces '<namespace>.<name>' on every desired-state change:
-- insert, spec/labels/annotations change, deletion request, purge. Status
-- writes do not notify (the reconciler would wake itself up). Delivered at
-- commit; identical payloads in one transaction are folded into one.
CREATE FUNCTION wsctl_workspaces_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('wsctl_workspaces', OLD.namespace || '.' || OLD.name);
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT'
       OR (NEW.spec, NEW.labels, NEW.annotations, NEW.deleted_at)
          IS DISTINCT FROM (OLD.spec, OLD.labels, OLD.annotations, OLD.deleted_at) THEN
        PERFORM pg_notify('wsctl_workspaces', NEW.namespace || '.' || NEW.name);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER workspaces_notify
    AFTER INSERT OR UPDATE OR DELETE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION wsctl_workspaces_notify();

-- ------------------------------------------------------------------ secrets
-- Values are plaintext for now; encryption at rest comes in a later issue.
CREATE TABLE secrets (
    name       text        NOT NULL,
    key        text        NOT NULL,
    value      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT secrets_pkey PRIMARY KEY (name, key),
    CONSTRAINT secrets_name_dns1123
        CHECK (length(name) <= 253 AND name ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'),
    CONSTRAINT secrets_key_chars CHECK (length(key) <= 253 AND key ~ '^[-._a-zA-Z0-9]+$')
);

-- ------------------------------------------------------------------ tokens
-- Per-container agent tokens. Only the sha256 of a token is stored, never the token.
CREATE TABLE tokens (
    workspace_id text        NOT NULL,
    generation   integer     NOT NULL,
    token_hash   text        NOT NULL,
    container_id text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    expires_at   timestamptz,
    CONSTRAINT tokens_pkey PRIMARY KEY (workspace_id, generation),
    CONSTRAINT tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT tokens_generation_positive CHECK (generation >= 1),
    CONSTRAINT tokens_token_hash_sha256 CHECK (token_hash ~ '^[0-9a-f]{64}$')
);

-- At most one live (unrevoked) token per workspace, enforced by the database.
CREATE UNIQUE INDEX tokens_one_live_per_workspace
    ON tokens (workspace_id) WHERE revoked_at IS NULL;

-- ------------------------------------------------------------------ registrations
CREATE TABLE registrations (
    workspace_id             text PRIMARY KEY,
    url                      text,
    agent_card               jsonb,
    token_generation         integer,
    registered_at            timestamptz,
    last_heartbeat_at        timestamptz,
    heartbeat_status         text,
    heartbeat_error_detail   text,
    active_tasks             integer,
    uptime_seconds           double precision,
    register_failure_at      timestamptz,
    register_failure_class   text,
    register_failure_message text,
    CONSTRAINT registrations_failure_marker_complete
        CHECK ((register_failure_at IS NULL) = (register_failure_class IS NULL)),
    CONSTRAINT registrations_active_tasks_nonnegative CHECK (active_tasks IS NULL OR active_tasks >= 0)
);

-- ------------------------------------------------------------------ activity
-- One row per A2A call (and other agent traffic). `source` is the raw caller
-- string; only a UUID caller (a workspace) fills source_id, so synthetic
-- callers such as 'system:restart-context' can never fail the insert.
CREATE TABLE activity (
    id           bigserial PRIMARY KEY,
    workspace_id text        NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    source_id    uuid,
    source_kind  text        NOT NULL,
    source       text        NOT NULL,
    method       text,
    request      jsonb,
    response     jsonb,
    status       text,
    error        text,
    CONSTRAINT activity_source_kind_known
        CHECK (source_kind IN ('workspace', 'system', 'user', 'webhook', 'other')),
    CONSTRAINT activity_source_id_only_for_workspaces
        CHECK ((source_id IS NOT NULL) = (source_kind = 'workspace'))
);

CREATE INDEX activity_workspace_idx ON activity (workspace_id, id DESC);
CREATE INDEX activity_source_id_idx ON activity (source_id) WHERE source_id IS NOT NULL;

-- ------------------------------------------------------------------ diagnostics
-- Captured from a container (by id) before it is replaced or removed.
-- env_names maps variable names to 'set' or 'unset'; values are never stored.
CREATE TABLE diagnostics (
    id           bigserial PRIMARY KEY,
    workspace_id text        NOT NULL,
    container_id text,
    captured_at  timestamptz NOT NULL DEFAULT now(),
    reason       text        NOT NULL,
    state        jsonb,
    exit_code    integer,
    oom_killed   boolean,
    log_tail     text,
    env_names    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT diagnostics_env_names_set_or_unset
        CHECK (jsonb_typeof(env_names) = 'object'
               AND NOT jsonb_path_exists(
                   env_names, '$.* ? (@.type() != "string" || (@ != "set" && @ != "unset"))'))
);

CREATE INDEX diagnostics_workspace_idx ON diagnostics (workspace_id, captured_at DESC, id DESC);

-- ------------------------------------------------------------------ events
-- Like Kubernetes events; a repeat of the latest event of a workspace (same
-- type, reason and message) bumps `count` and `at` instead of adding a row.
CREATE TABLE events (
    id           bigserial PRIMARY KEY,
    workspace_id text        NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    first_at     timestamptz NOT NULL DEFAULT now(),
    count        integer     NOT NULL DEFAULT 1,
    type         text        NOT NULL,
    reason       text        NOT NULL,
    message      text        NOT NULL DEFAULT '',
    CONSTRAINT events_type_known CHECK (type IN ('Normal', 'Warning')),
    CONSTRAINT events_count_positive CHECK (count >= 1)
);

CREATE INDEX events_workspace_idx ON events (workspace_id, id DESC);
