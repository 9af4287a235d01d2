-- kiln schema, version 2: the journal of running-total changes.
--
-- Write transactions no longer update metric_totals, whose few rows every
-- writer of a kind would otherwise queue on: each inserts one row here, its
-- net changes as a JSON array of [family, labels, value] triples, in one
-- statement at its very end (on PostgreSQL in the same round trip as its
-- COMMIT). One folder at a time (store.Fold) merges the rows into
-- metric_totals and deletes them, in one transaction; readers add the rows
-- still here to the totals they read. Writers only insert, so no row is
-- ever locked by two of them. There is no primary key on purpose: the
-- folder takes rows by ctid (PostgreSQL) or rowid (SQLite), and an index
-- would only slow every writer down. The column is text, not JSONB: the
-- writer's row is parsed by the folder, once, not by the writer.

-- +goose Up
CREATE TABLE metric_journal (
    entries TEXT NOT NULL
);
