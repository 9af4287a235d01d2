-- kiln schema, version 10: worker pools that start and stop instances
-- through a provider, and the instances with their runtime.
--
-- worker_pools takes the names of the pool settings (settings, min_idle,
-- max_instances) and gains the rest (concurrent: the requests each
-- instance's runner runs at once), with the status the autoscaler
-- records (failures and backoff, last error, last decision) and the mark
-- of a pool being drained before its deletion. runtime stays what it was:
-- the runtime of the pool's stopped instances, in microseconds, added in
-- the transaction that stops one.
--
-- pool_instances holds one row per instance ever started: its slot (the
-- pool worker "<pool>-<slot>" it runs), its state, when it was created
-- (runtime starts), last seen alive (a lost instance's runtime ends
-- there) and stopped. Live instances are few and read through
-- pool_instances_live, so the public endpoint reads O(pools + live
-- instances) rows for worker_pool_runtime; the monthly budget reads the
-- pool's instances of the month through pool_instances_stopped. A slot
-- has at most one live instance (the unique partial index).
--
-- workers.instance_started_at, the single-instance accounting it
-- replaces, goes; an instance it still counted as running becomes a live
-- row that the autoscaler reconciles with its provider (and closes at the
-- time it was last seen).

-- +goose Up
ALTER TABLE worker_pools RENAME COLUMN specifications TO settings;
ALTER TABLE worker_pools RENAME COLUMN min_workers TO min_idle;
ALTER TABLE worker_pools RENAME COLUMN max_workers TO max_instances;
ALTER TABLE worker_pools ADD COLUMN backends @JSON@ NOT NULL DEFAULT '[]';
ALTER TABLE worker_pools ADD COLUMN concurrent INTEGER NOT NULL DEFAULT 1;
ALTER TABLE worker_pools ADD COLUMN idle_timeout BIGINT NOT NULL DEFAULT 600000000;
ALTER TABLE worker_pools ADD COLUMN startup_timeout BIGINT NOT NULL DEFAULT 600000000;
ALTER TABLE worker_pools ADD COLUMN max_seconds_per_month BIGINT;
ALTER TABLE worker_pools ADD COLUMN deleting BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE worker_pools ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE worker_pools ADD COLUMN backoff_until BIGINT;
ALTER TABLE worker_pools ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
ALTER TABLE worker_pools ADD COLUMN last_error_at BIGINT;
ALTER TABLE worker_pools ADD COLUMN last_decision TEXT NOT NULL DEFAULT '';
ALTER TABLE worker_pools ADD COLUMN last_decision_at BIGINT;

CREATE TABLE pool_instances (
    id @ID@,
    pool_id BIGINT NOT NULL REFERENCES worker_pools(id),
    slot INTEGER NOT NULL,
    name TEXT NOT NULL,
    worker_id BIGINT NOT NULL REFERENCES workers(id),
    -- creating, running, stopping, stopped
    state TEXT NOT NULL,
    provider_id TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    connected_at BIGINT,
    idle_since BIGINT,
    last_seen_at BIGINT NOT NULL,
    stopped_at BIGINT,
    stop_reason TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    exit_status INTEGER,
    stderr TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX pool_instances_live ON pool_instances(pool_id, slot) WHERE stopped_at IS NULL;
CREATE INDEX pool_instances_stopped ON pool_instances(pool_id, stopped_at);
CREATE INDEX pool_instances_worker ON pool_instances(worker_id);

INSERT INTO pool_instances (pool_id, slot, name, worker_id, state, created_at, connected_at, last_seen_at)
SELECT worker_pool_id, id, name, id, 'running', instance_started_at, instance_started_at,
    COALESCE(last_seen_at, instance_started_at)
FROM workers WHERE worker_pool_id IS NOT NULL AND instance_started_at IS NOT NULL;
ALTER TABLE workers DROP COLUMN instance_started_at;
