-- kiln schema, version 4: what hardening (issue 13) needs.
--
-- Incoming webhook events that started work, remembered for the replay
-- window (issue 13): the same event sent again — same delivery id, or
-- same signature — is refused by every replica, since they share this
-- table. One row per key of an event: its sender's delivery ids
-- (X-GitHub-Delivery, X-Gitlab-Event-UUID, Idempotency-Key,
-- X-Kiln-Delivery) and its signature, each under the header it came in.

-- +goose Up
CREATE TABLE webhook_deliveries (
    source TEXT NOT NULL,
    header TEXT NOT NULL,
    value TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (source, header, value)
);
CREATE INDEX webhook_deliveries_received ON webhook_deliveries(received_at);

-- The files still waiting for their content: an upload in progress, or one
-- cut by a crash, which the incomplete-artifact sweep finds through this
-- index without reading every file.
CREATE INDEX artifact_files_missing ON artifact_files(artifact_id) WHERE file_id IS NULL;
