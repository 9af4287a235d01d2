package server

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/workflow"
)

// startWorkflowMetrics puts the metrics that workflow templates declare
// (docs/architecture.md#template-metrics, package workflow) on the internal registry — the
// --metrics-server listener, never the public port, since their names and
// label values come from users — and feeds them from the store's OnFinish
// hook, which hears of every workflow this process finishes. It must run
// before the store is shared (the scheduler and the API start after it).
// The returned stop waits for the recorder, so that it never reads a
// closed database.
func startWorkflowMetrics(ctx context.Context, st store.Store, reg prometheus.Registerer, cfg Config, logger *slog.Logger) (stop func(), err error) {
	m := workflow.NewMetrics(workflow.MetricsOptions{TTL: cfg.WorkflowMetricsTTL, MaxSeries: cfg.WorkflowMetricsMaxSeries})
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	rec := workflow.NewRecorder(m, st, logger.With("component", "workflow-metrics"))
	st.OnFinish(rec.Hook)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		rec.Run(ctx)
	}()
	return func() { cancel(); <-done }, nil
}
