package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/store"
)

// DefaultFoldInterval is how often a server folds the journal of
// running-total changes into the totals. Readers count what is not folded
// yet, so the interval only bounds how much they read: about one second
// of writes.
const DefaultFoldInterval = time.Second

// startFolder folds the store's journal of running-total changes every
// interval (store.FoldEvery; among replicas one folds at a time, the
// others find it busy) and counts what it does on the internal registry.
// The returned stop waits for a fold under way to end.
func startFolder(ctx context.Context, st store.Folder, reg prometheus.Registerer, interval time.Duration, logger *slog.Logger) (stop func(), err error) {
	folded := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kiln_totals_folded_entries_total",
		Help: "Entries of the running-totals journal (one per write transaction) that this process merged into the totals.",
	})
	failed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kiln_totals_fold_errors_total",
		Help: "Folds of the running-totals journal that failed (retried at the next interval).",
	})
	took := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "kiln_totals_fold_duration_seconds",
		Help:    "Time taken by folds of the running-totals journal that merged rows.",
		Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5},
	})
	for _, c := range []prometheus.Collector{folded, failed, took} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	log := logger.With("component", "totals-folder")
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		store.FoldEvery(ctx, st, interval, func(res store.FoldResult, d time.Duration, err error) {
			switch {
			case err != nil:
				failed.Inc()
				log.Warn("folding the running totals' journal failed; retrying at the next interval", "error", err)
			case res.Entries > 0:
				folded.Add(float64(res.Entries))
				took.Observe(d.Seconds())
			}
		})
	}()
	return func() { cancel(); <-done }, nil
}
