-- kiln schema, version 7: what the web dashboard needs.
--
-- Sign-in sessions: a browser signs in with an API token and gets a cookie
-- whose secret is stored here only as its SHA-256, like token secrets.
-- Sessions live in the database so that every server replica behind a load
-- balancer knows them, and so that signing out really ends one. A session
-- stands for the token it was opened with: deleting the token deletes its
-- sessions, and a disabled or expired token (or an inactive user) ends
-- them at their next use.
--
-- Rollups: the running totals behind the dashboard's statistics, charts
-- and counts (store/rollups.go says what each family counts), a ledger of
-- the journal of running totals beside metric_totals: write transactions
-- journal their changes, the folder merges them here, scrapes never read
-- them. The columns after value are generated from the labels, so that
-- the folder, which writes (family, labels, value) into every ledger alike,
-- needs nothing new, while readers select a window of days, a set of
-- workspaces and group by task with an index and plain columns.
--
-- Work request lists: the dashboard lists a workspace's requests newest
-- first, filtered by status, task name or architecture, in keyset pages on
-- (created_at, id). Each of these indexes serves one such list as an index
-- range, so a page reads its rows and no others; the plain workspace index
-- is a prefix of the first and goes.

-- +goose Up
CREATE TABLE dashboard_sessions (
    id @ID@,
    hash TEXT NOT NULL UNIQUE,
    token_id BIGINT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    -- the secret that the session's forms carry (sign-out), against CSRF
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_token ON dashboard_sessions(token_id);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions(expires_at);

CREATE TABLE statistics_totals (
    family TEXT NOT NULL,
    labels TEXT NOT NULL,
    value BIGINT NOT NULL,
    period BIGINT GENERATED ALWAYS AS (CAST(CAST(labels AS @JSON@) ->> 'period' AS BIGINT)) STORED,
    workspace_id BIGINT GENERATED ALWAYS AS (CAST(CAST(labels AS @JSON@) ->> 'workspace_id' AS BIGINT)) STORED,
    task_type TEXT GENERATED ALWAYS AS (CAST(labels AS @JSON@) ->> 'task_type') STORED,
    task_name TEXT GENERATED ALWAYS AS (CAST(labels AS @JSON@) ->> 'task_name') STORED,
    result TEXT GENERATED ALWAYS AS (CAST(labels AS @JSON@) ->> 'result') STORED,
    le TEXT GENERATED ALWAYS AS (CAST(labels AS @JSON@) ->> 'le') STORED,
    status TEXT GENERATED ALWAYS AS (CAST(labels AS @JSON@) ->> 'status') STORED,
    PRIMARY KEY (family, labels)
);
-- a window of days of one family, with every column readers group by and
-- the value: read from the index alone (an index-only scan on PostgreSQL),
-- so a window costs its own rows however many days the table holds
CREATE INDEX statistics_totals_window ON statistics_totals(family, period, workspace_id, task_type, task_name, result, le,
    status, value);

CREATE INDEX work_requests_browse ON work_requests(workspace_id, created_at, id);
CREATE INDEX work_requests_browse_status ON work_requests(workspace_id, status, created_at, id);
CREATE INDEX work_requests_browse_task ON work_requests(workspace_id, task_name, created_at, id);
CREATE INDEX work_requests_browse_arch ON work_requests(workspace_id, (data->>'host_architecture'), created_at, id);
CREATE INDEX work_requests_browse_workflows ON work_requests(workspace_id, created_at, id)
    WHERE parent_id IS NULL AND task_type = 'Workflow';
DROP INDEX work_requests_workspace;
