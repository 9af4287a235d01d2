// Package report writes kiln's statistics report: one JSON document with
// every figure of the public metrics endpoint and the per-task statistics
// of the dashboard, to a local file or to an S3 bucket, once (`kiln
// report`) or on a schedule inside the server (docs/architecture.md#reports).
//
// Conventions the document keeps (docs/report.schema.json describes it):
//   - The public figures are the families openmetrics.Gather builds from
//     one store.Snapshot — the very values a scrape answering from that
//     snapshot encodes, series for series, with the same names, labels
//     and help — so the report and the endpoint cannot disagree. The
//     service status is summed from the same families.
//   - The statistics are statistics.Compute for the whole farm (kiln
//     itself is the viewer) over a window of days up to the report's day:
//     GET /api/1.0/statistics/ as an administrator sees it. They name
//     workspaces, the private ones too: a report is an operator's
//     document, stored where the operator decides.
//   - schema_version changes when a field changes meaning or type or goes
//     away, not when one is added; readers ignore what they do not know.
//   - Histograms keep the exposition's cumulative buckets, without the
//     +Inf bucket, which is the count.
//
// A report is written whole or not at all: a file target writes a
// temporary file beside the target and renames it over it; an S3 target
// writes report-<UTC time>.json and then latest.json, each object whole
// or absent (filestore.Bucket), so latest.json is only ever replaced by a
// report that was itself written.
//
// # One report per interval among replicas
//
// Every replica of a server with a schedule runs a Scheduler; the
// database decides which one writes each interval's report, with a row
// claim (store.SQL.ClaimReport): the first replica to ask for an interval
// holds it for a lease, writes the report retrying with backoff while the
// lease lasts, and marks the interval done. A replica that dies, or keeps
// failing, loses the interval when its lease runs out, and another one
// takes it over. An advisory lock was not enough: it says who writes now,
// not whether this interval's report was written already, and a replica
// that reached the lock after the writer let go would write it again.
// The claim works the same on SQLite and PostgreSQL.
package report
