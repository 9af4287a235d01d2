-- kiln schema, version 12: the live logs of running requests, readable
-- through every server replica (package livelog argues the table against
-- relaying logs through NOTIFY).
--
-- A row is one chunk of the log a runner streams, as its replica received
-- it: bytes, not text (a log may hold any byte, NUL included), at pos in
-- the log of one attempt of the request. attempt is the request's retries
-- when the attempt started, so that the chunks of an attempt that was
-- requeued, or of a runner that lost the request, are never read as the
-- next attempt's log; such chunks, and those of requests that ended, are
-- deleted by the replica that received the result, else by a sweep.
-- Chunks may overlap (a runner that reconnects resends from what it knows
-- was sent): readers skip what they already returned.

-- +goose Up
CREATE TABLE live_log_chunks (
    work_request_id BIGINT NOT NULL REFERENCES work_requests(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    pos BIGINT NOT NULL,
    data @BYTES@ NOT NULL,
    PRIMARY KEY (work_request_id, attempt, pos)
);
