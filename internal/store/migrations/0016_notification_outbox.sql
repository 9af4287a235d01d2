-- The notifications of finished work requests still to be delivered to
-- the server's --notify-url receivers: a transactional outbox. The
-- transaction that finishes a request writes its row, so a notification
-- exists exactly when the finish committed; any replica's delivery loop
-- claims due rows (due_at; a claim pushes it a lease ahead, so the rows
-- of a replica that died come due again), deletes a row once delivered
-- and pushes it back by a backoff when not. attempts counts the claims;
-- delivered lists the receivers already done with (the loop's own
-- fingerprints of their URLs), so that a retry skips them.
-- Times are microseconds since the epoch, as everywhere.

-- +goose Up
CREATE TABLE notification_outbox (
    id @ID@,
    work_request_id BIGINT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    delivered TEXT NOT NULL DEFAULT ''
);
CREATE INDEX notification_outbox_due ON notification_outbox (due_at);
