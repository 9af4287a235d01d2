-- kiln schema, version 1: the whole domain model of SPEC §2.
--
-- One file serves SQLite and PostgreSQL. Before it runs, @ID@ becomes the
-- dialect's auto-increment primary key and @JSON@ its JSON column type
-- (TEXT on SQLite, JSONB on PostgreSQL). Timestamps are BIGINT microseconds
-- since the Unix epoch (UTC) in both databases, so that comparisons and ages
-- are plain integer arithmetic, identical on both. Durations are BIGINT
-- microseconds too.
--
-- Foreign keys RESTRICT deletion: kiln keeps running totals of most tables
-- (metric_totals), so a row may only disappear through the store, which
-- adjusts the totals in the same transaction.

-- +goose Up
CREATE TABLE scopes (
    id @ID@,
    name TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);

CREATE TABLE workspaces (
    id @ID@,
    scope_id BIGINT NOT NULL REFERENCES scopes(id),
    name TEXT NOT NULL,
    public BOOLEAN NOT NULL DEFAULT TRUE,
    expiration_delay BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (scope_id, name)
);

CREATE TABLE users (
    id @ID@,
    username TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL DEFAULT '',
    active BOOLEAN NOT NULL DEFAULT TRUE,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    is_system BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE TABLE identities (
    id @ID@,
    user_id BIGINT NOT NULL REFERENCES users(id),
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (issuer, subject)
);
CREATE INDEX identities_user ON identities(user_id);

CREATE TABLE user_groups (
    id @ID@,
    scope_id BIGINT NOT NULL REFERENCES scopes(id),
    name TEXT NOT NULL,
    ephemeral BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    UNIQUE (scope_id, name)
);

CREATE TABLE group_members (
    group_id BIGINT NOT NULL REFERENCES user_groups(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members(user_id);

CREATE TABLE workspace_members (
    id @ID@,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    user_id BIGINT REFERENCES users(id),
    group_id BIGINT REFERENCES user_groups(id),
    role TEXT NOT NULL,
    CHECK ((user_id IS NULL) <> (group_id IS NULL))
);
CREATE UNIQUE INDEX workspace_members_user ON workspace_members(workspace_id, user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX workspace_members_group ON workspace_members(workspace_id, group_id) WHERE group_id IS NOT NULL;

CREATE TABLE worker_pools (
    id @ID@,
    name TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL DEFAULT 'static',
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    architectures @JSON@ NOT NULL,
    specifications @JSON@ NOT NULL,
    min_workers INTEGER NOT NULL DEFAULT 0,
    max_workers INTEGER NOT NULL DEFAULT 0,
    -- runtime of instances that have stopped, in microseconds
    runtime BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE workers (
    id @ID@,
    name TEXT NOT NULL UNIQUE,
    worker_type TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT FALSE,
    connected_at BIGINT,
    last_seen_at BIGINT,
    metadata @JSON@ NOT NULL,
    worker_pool_id BIGINT REFERENCES worker_pools(id),
    -- when the current pool instance started, for runtime accounting
    instance_started_at BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    id @ID@,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    user_id BIGINT REFERENCES users(id),
    worker_id BIGINT REFERENCES workers(id),
    scope_id BIGINT REFERENCES scopes(id),
    last_seen_at BIGINT,
    expires_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX tokens_user ON tokens(user_id);
CREATE INDEX tokens_worker ON tokens(worker_id);

CREATE TABLE file_stores (
    id @ID@,
    name TEXT NOT NULL UNIQUE,
    backend TEXT NOT NULL,
    configuration @JSON@ NOT NULL,
    total_size BIGINT NOT NULL DEFAULT 0,
    max_size BIGINT,
    is_default BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    CHECK (max_size IS NULL OR max_size >= 0),
    CHECK (total_size >= 0)
);

CREATE TABLE workflow_templates (
    id @ID@,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    task_name TEXT NOT NULL,
    static_data @JSON@ NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    metrics @JSON@ NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE work_requests (
    id @ID@,
    task_type TEXT NOT NULL,
    task_name TEXT NOT NULL,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    status TEXT NOT NULL,
    result TEXT NOT NULL DEFAULT '',
    data @JSON@ NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    created_by BIGINT REFERENCES users(id),
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    completed_at BIGINT,
    worker_id BIGINT REFERENCES workers(id),
    parent_id BIGINT REFERENCES work_requests(id),
    workflow_template_id BIGINT REFERENCES workflow_templates(id),
    step_name TEXT NOT NULL DEFAULT '',
    retries INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 3,
    statistics @JSON@,
    -- run time in microseconds, fixed at completion: the runner's measured
    -- duration, else completed_at - started_at; task_execution_times counts it
    execution_time BIGINT,
    output @JSON@
);
-- the scheduler's queue: pending requests by priority, then age
CREATE INDEX work_requests_queue ON work_requests(status, priority DESC, created_at, id);
CREATE INDEX work_requests_worker ON work_requests(worker_id, status);
CREATE INDEX work_requests_parent ON work_requests(parent_id);
CREATE INDEX work_requests_workspace ON work_requests(workspace_id);

CREATE TABLE work_request_dependencies (
    work_request_id BIGINT NOT NULL REFERENCES work_requests(id),
    depends_on_id BIGINT NOT NULL REFERENCES work_requests(id),
    PRIMARY KEY (work_request_id, depends_on_id)
);
CREATE INDEX work_request_dependencies_rev ON work_request_dependencies(depends_on_id);

CREATE TABLE artifacts (
    id @ID@,
    category TEXT NOT NULL,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    data @JSON@ NOT NULL,
    created_by BIGINT REFERENCES users(id),
    work_request_id BIGINT REFERENCES work_requests(id),
    expire_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX artifacts_workspace ON artifacts(workspace_id);
CREATE INDEX artifacts_work_request ON artifacts(work_request_id);

-- files: content stored once per file store, addressed by sha256;
-- file_stores.total_size is the sum of their sizes.
CREATE TABLE files (
    id @ID@,
    file_store_id BIGINT NOT NULL REFERENCES file_stores(id),
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (file_store_id, sha256)
);

CREATE TABLE artifact_files (
    artifact_id BIGINT NOT NULL REFERENCES artifacts(id),
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    -- set once the content has been uploaded and checked
    file_id BIGINT REFERENCES files(id),
    PRIMARY KEY (artifact_id, path)
);
CREATE INDEX artifact_files_file ON artifact_files(file_id);

CREATE TABLE assets (
    id @ID@,
    category TEXT NOT NULL,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    data @JSON@ NOT NULL,
    created_by BIGINT REFERENCES users(id),
    created_at BIGINT NOT NULL
);
CREATE INDEX assets_workspace ON assets(workspace_id);

CREATE TABLE collections (
    id @ID@,
    category TEXT NOT NULL,
    name TEXT NOT NULL,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    data @JSON@ NOT NULL,
    item_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    UNIQUE (workspace_id, category, name)
);

CREATE TABLE collection_items (
    id @ID@,
    collection_id BIGINT NOT NULL REFERENCES collections(id),
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    artifact_id BIGINT REFERENCES artifacts(id),
    data @JSON@ NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (collection_id, name)
);

-- when each user last created a root workflow in each scope: one small row
-- per (user, scope), read by the user-activity histograms at scrape time.
CREATE TABLE user_scope_activity (
    user_id BIGINT NOT NULL REFERENCES users(id),
    scope_id BIGINT NOT NULL REFERENCES scopes(id),
    last_workflow_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, scope_id)
);

-- running totals behind the public metrics endpoint: one row per metric
-- family and label set (canonical JSON of label ids and values), updated in
-- the same transaction as the rows it counts. A row whose value falls to 0
-- stays, so that a label set that once existed keeps reporting 0.
CREATE TABLE metric_totals (
    family TEXT NOT NULL,
    labels TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (family, labels)
);
