package runner

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/telemetry"
)

// metrics are the runner's figures on its --metrics-server listener (SPEC
// §4), kept in a private registry next to the Go and process collectors
// and the version info. Labels are bounded: task names come from the
// built-in tasks, results and error kinds are enumerations.
type metrics struct {
	reg       *prometheus.Registry
	connected prometheus.Gauge
	running   prometheus.Gauge
	finished  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	errors    *prometheus.CounterVec
}

func newMetrics() (*metrics, error) {
	reg := telemetry.NewRegistry()
	if err := telemetry.RegisterInfo(reg, "kiln_runner_version_info", "Build information of the kiln runner; always 1.", telemetry.ReadBuildInfo()); err != nil {
		return nil, err
	}
	m := &metrics{
		reg: reg,
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_runner_connected",
			Help: "1 while the runner holds a connection to its server, else 0.",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_runner_jobs_running",
			Help: "Work requests the runner is running (0 or 1).",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_runner_jobs_finished_total",
			Help: "Work requests the runner finished, by task and result.",
		}, []string{"task", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_runner_job_duration_seconds",
			Help:    "Wall-clock duration of the work requests the runner ran.",
			Buckets: []float64{.1, .5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400},
		}, []string{"task"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_runner_server_errors_total",
			Help: "Failed exchanges with the server, by kind (connect, protocol, upload).",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.connected, m.running, m.finished, m.duration, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, k := range []string{"connect", "protocol", "upload"} {
		m.errors.WithLabelValues(k)
	}
	return m, nil
}
