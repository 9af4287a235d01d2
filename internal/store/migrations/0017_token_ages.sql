-- kiln schema: the enabled tokens in order of last use, for the histogram
-- of the time since each was last used (tokens_last_seen). A scrape counts
-- each bucket of it over a range of this index, reading the index alone,
-- instead of reading every token's row (store.tokenAgesQuery). An index
-- entry changes when last_seen_at does, at most once a minute per token in
-- use.

-- +goose Up
CREATE INDEX tokens_enabled_last_seen ON tokens (last_seen_at) WHERE enabled;
