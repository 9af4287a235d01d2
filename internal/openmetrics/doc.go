// Package openmetrics serves kiln's public metrics endpoint,
// GET /api/1.0/open-metrics/ (docs/architecture.md#public-endpoint), and its JSON twin
// GET /api/1.0/service-status/.
//
// The endpoint is public, so it is built to leak nothing: every figure comes
// from a store.Snapshot, which holds running totals and a few small tables
// (scope, pool and file store names, per-(user, scope) activity ages, token
// last-use times) but no workspace, user, artifact or file names and no task
// data beyond the host architecture and backend of Worker tasks. Labels
// outside each family's documented list never reach the output, even if the
// store starts keeping more of them.
//
// Layout follows node_exporter: each metric family is one small function in
// its own file named after the family (artifacts.go, work_requests.go, …)
// that registers itself and turns a snapshot into a *dto.MetricFamily with
// the gauge and histogram builders of series.go. The families are built by
// hand rather than through a client_golang registry because series of one
// family carry different label sets (Worker tasks have host_architecture,
// pool workers have worker_pool), which the registry rejects. Gather runs
// every family and never lets one bad family break the scrape: the failing
// family is logged and left out.
//
// A scrape costs O(series), so the builders spend as little as they can on
// each: no map per series, label pairs interned, and the series of one
// refresh kept for the next (series.go), which then allocates only for the
// series whose value changed.
//
// Encoding is always done by github.com/prometheus/common/expfmt, in
// OpenMetrics 1.0.0 when the scraper asks for it and in the Prometheus text
// format 0.0.4 otherwise; label values are escaped by the encoder. The
// lines of each series are kept per format while its figures stay the same
// (encoding.go), so a refresh encodes only the series that changed.
//
// Conventions shared by all families:
//   - Series are sorted by their label pairs, so the output is byte-for-byte
//     reproducible from the same figures on SQLite and PostgreSQL.
//   - Running totals are never deleted by the store, so a label set that
//     once had rows keeps reporting 0 after its rows are gone; no family
//     fills in label combinations that never existed.
//   - Units are given in HELP (seconds, bytes, days) rather than in # UNIT
//     lines, because the names are fixed by docs/architecture.md#public-endpoint and OpenMetrics requires
//     a unit to be the suffix of the name.
//   - Histograms kept as running totals store non-cumulative bucket counts
//     under the bucket's upper bound (see store.*Buckets); they are exposed
//     with exactly those bounds, made cumulative, with _sum and _count
//     (count = sum of the buckets).
package openmetrics
