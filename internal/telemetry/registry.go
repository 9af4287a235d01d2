package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a fresh registry holding the Go runtime and process
// collectors, ready for the kiln-specific collectors to be added.
//
// kiln never uses prometheus.DefaultRegisterer: a private registry keeps
// tests independent, lets the server and its local runners share a process
// without name clashes, and means nothing a dependency registers globally
// leaks onto /metrics.
//
// The Go collector is client_golang's default one: go_memstats_*,
// go_gc_duration_seconds, go_goroutines, go_threads, go_info and the few
// runtime/metrics gauges it adds (GOGC, GOMEMLIMIT, GOMAXPROCS) — the set
// every Go dashboard and alert is written against. It is deliberately not
// the whole runtime/metrics collection, which replaces go_memstats_* with
// about 45 go_godebug_* and other families nobody graphs.
//
// One quirk is accepted knowingly: in OpenMetrics the gauge
// go_memstats_alloc_bytes and the counter go_memstats_alloc_bytes_total
// share the family name go_memstats_alloc_bytes. Prometheus ingests both;
// promtool reads only the text format, where they are distinct.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}
