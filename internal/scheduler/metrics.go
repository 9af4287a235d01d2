package scheduler

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/model"
)

// metrics are the scheduler's own figures on the server's internal
// listener (docs/architecture.md#server-instrumentation): how long requests waited in the queue, how many were
// assigned, finished and requeued. Labels are bounded: task types, worker
// types and results are enumerations.
type metrics struct {
	queueWait *prometheus.HistogramVec
	assigns   *prometheus.CounterVec
	finished  *prometheus.CounterVec
	requeued  prometheus.Counter
	runners   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_scheduler_queue_wait_seconds",
			Help:    "Time work requests spent pending before a worker claimed them.",
			Buckets: []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600},
		}, []string{"task_type"}),
		assigns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_scheduler_assignments_total",
			Help: "Work requests handed to a worker by this server, by worker type.",
		}, []string{"worker_type"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_scheduler_results_total",
			Help: "Work request results recorded by this server, by task type and result.",
		}, []string{"task_type", "result"}),
		requeued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_scheduler_requeued_total",
			Help: "Running work requests put back in the queue because their runner stopped sending heartbeats.",
		}),
		runners: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_scheduler_runner_connections",
			Help: "Runners connected to this server process.",
		}),
	}
	// Series of what this scheduler hands out exist from the start, so
	// that dashboards and rate() see 0 rather than nothing before the
	// first claim.
	for _, wt := range []model.WorkerType{model.WorkerExternal, model.WorkerServer} {
		m.assigns.WithLabelValues(string(wt))
	}
	for _, tt := range []model.TaskType{model.TaskWorker, model.TaskServer} {
		m.queueWait.WithLabelValues(string(tt))
		for _, r := range []model.Result{model.ResultSuccess, model.ResultFailure, model.ResultError, model.ResultSkipped} {
			m.finished.WithLabelValues(string(tt), string(r))
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.queueWait, m.assigns, m.finished, m.requeued, m.runners} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// assigned records a claim.
func (m *metrics) assigned(wr *model.WorkRequest, wt model.WorkerType) {
	m.assigns.WithLabelValues(string(wt)).Inc()
	if wr.StartedAt != nil {
		m.queueWait.WithLabelValues(string(wr.TaskType)).Observe(max(0, wr.StartedAt.Sub(wr.CreatedAt).Seconds()))
	} else {
		m.queueWait.WithLabelValues(string(wr.TaskType)).Observe(max(0, time.Since(wr.CreatedAt).Seconds()))
	}
}
