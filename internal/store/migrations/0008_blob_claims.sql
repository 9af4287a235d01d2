-- Claims on content of a file store, so that several server replicas
-- never delete bytes that another one is uploading or has just attached
-- (see internal/store/blobclaims.go). kind is 'upload' (an upload of the
-- content is under way) or 'delete' (its bytes are being deleted). Rows
-- live for the length of one upload or one deletion; those of a process
-- that died are expired by age.

-- +goose Up
CREATE TABLE blob_claims (
    id @ID@,
    file_store_id BIGINT NOT NULL REFERENCES file_stores(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('upload', 'delete')),
    created_at BIGINT NOT NULL
);
CREATE INDEX blob_claims_content ON blob_claims(file_store_id, sha256);
CREATE INDEX blob_claims_created ON blob_claims(created_at);
