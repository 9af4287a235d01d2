package telemetry

import (
	"regexp"

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
// The Go collector is configured with runtime/metrics only, without the
// legacy MemStats families. With MemStats, client_golang emits both a gauge
// go_memstats_alloc_bytes and a counter go_memstats_alloc_bytes_total, which
// in OpenMetrics are two families with the same name; Prometheus tolerates
// that but promtool and strict parsers reject the exposition. (This is what
// the deprecated collectors.WithGoCollections(GoRuntimeMetricsCollection)
// does, spelt with the options that replace it.)
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(
			collectors.WithGoCollectorMemStatsMetricsDisabled(),
			collectors.WithGoCollectorRuntimeMetrics(collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile("/.*")}),
		),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}
