// Package statistics answers the per-task questions of a build farm — how
// many runs, how many succeeded, how long they ran and waited — per task
// name, per scope and per workspace over a window of days, for the
// dashboard, for GET /api/1.0/statistics/ and for reports
// (docs/architecture.md#statistics).
//
// Conventions every figure follows:
//   - Figures come from the store's rollups (store.Rollup), running totals
//     kept by completion day × workspace × task in the same transactions as
//     the work requests they count; one call reads one snapshot. Nothing
//     here reads the work requests, so a figure costs the same on a farm of
//     ten thousand requests as on one of ten million.
//   - Who sees what is the store's visibility, applied to the rollups by
//     workspace: a workspace the viewer may not see adds nothing to any
//     figure — not to a task's total, not to a scope's, not to a chart.
//   - A run is a work request that finished (completed, or aborted) in the
//     window, counted on the day it finished, with its current outcome: a
//     request retried after a failure counts once, as it ended last.
//   - The success rate is success ÷ (success + failure + error): skipped
//     requests did nothing and aborted ones were stopped, so neither is a
//     verdict on the task. It is absent when there is no verdict.
//   - Percentiles are nearest-rank percentiles read from fixed buckets
//     (Histogram.Quantile): the upper bound of the bucket holding the
//     observation of rank ⌈p·n/100⌉ — never below the true value and at
//     most 28 % above it. Run time is the execution time kiln records
//     (the runner's measured duration); queue wait is started − created.
//   - Days are UTC days; a window is whole days, today included.
package statistics
