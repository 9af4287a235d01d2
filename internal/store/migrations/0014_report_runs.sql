-- The reports a server writes on a schedule (--report-interval): one row
-- per interval, claimed by the replica that writes that interval's report,
-- so that replicas sharing the database write one report per interval
-- between them. A claim is a lease: when its holder dies or keeps failing,
-- another replica takes the interval over once the lease has run out.
-- Times are microseconds since the epoch, as everywhere.

-- +goose Up
CREATE TABLE report_runs (
    slot BIGINT PRIMARY KEY,
    claimed_by TEXT NOT NULL,
    claimed_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    claims INTEGER NOT NULL,
    finished_at BIGINT,
    written_to TEXT
);
