-- kiln schema, version 3: claims and Wait timers that reach what they look
-- for through an index, whatever else the queue holds.
--
-- host_architecture and backend are the part of a Worker task's data that
-- decides who may run it (docs/architecture.md#matching). As generated
-- columns the database derives them from data on every insert and update,
-- and fills them for the rows already there while this migration runs: no
-- code path can forget them. @GENERATED@ is STORED on PostgreSQL (the only
-- kind it has) and VIRTUAL on SQLite (the only kind ALTER TABLE can add
-- there; its index stores the values). Other task types have neither
-- (NULL).
--
-- The partial indexes cover pending requests only, in queue order
-- (priority, then age) after the keys a claim matches on exactly, so a
-- claim reads the first row of each (architecture, backend) it can run
-- and never the requests nobody it serves could take. They do not
-- overlap, and the old queue index goes: on a table whose statistics lag
-- behind (a queue that filled in minutes), the planner could otherwise
-- pick another index read in queue order and filter the architecture
-- row by row. Lists by status read work_requests_status in id order.
--
-- due_at (microseconds, like every timestamp) is when a running Wait
-- request completes; the scheduler sets it when it starts one.

-- +goose Up
ALTER TABLE work_requests ADD COLUMN host_architecture TEXT
    GENERATED ALWAYS AS (CASE WHEN task_type = 'Worker' THEN data->>'host_architecture' END) @GENERATED@;
ALTER TABLE work_requests ADD COLUMN backend TEXT
    GENERATED ALWAYS AS (CASE WHEN task_type = 'Worker' THEN COALESCE(data->>'backend', 'auto') END) @GENERATED@;
ALTER TABLE work_requests ADD COLUMN due_at BIGINT;

-- Worker tasks: a claim asks for one (host_architecture, backend) at a time
CREATE INDEX work_requests_pending_worker ON work_requests(host_architecture, backend, priority DESC, created_at, id)
    WHERE status = 'pending' AND task_type = 'Worker';
-- every other task type (Server and Signing claims, Wait requests to
-- start); queries repeat task_type <> 'Worker' word for word, which is
-- how SQLite recognises that a partial index applies
CREATE INDEX work_requests_pending ON work_requests(task_type, priority DESC, created_at, id)
    WHERE status = 'pending' AND task_type <> 'Worker';
DROP INDEX work_requests_queue;
CREATE INDEX work_requests_status ON work_requests(status, id);
-- running requests (Wait ones) by the time they are due; the task type
-- leads, so that SQLite prefers it to work_requests_status without
-- statistics
CREATE INDEX work_requests_running_due ON work_requests(task_type, due_at)
    WHERE status = 'running';
