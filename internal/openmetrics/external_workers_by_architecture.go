package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/model"
)

func init() { register("external_workers_by_architecture", externalWorkersByArchitecture) }

// externalWorkersByArchitecture counts external workers per architecture
// they support, by connection and busy state: the idiomatic companion of
// workers. There, every external-worker series carries an
// architecture_<a> label for each architecture known to any external
// worker, as docs/architecture.md#public-endpoint specifies; so the first worker of a new architecture
// gives every external-worker series a new label, and every one of them
// becomes a new series in Prometheus (and breaks the continuity of
// queries that match on all labels). Here the architecture is a label
// value: a new architecture adds series of its own and changes no other,
// names need no mapping, and a worker counts once under each architecture
// it supports (so the series of one worker state do not add up to a
// number of workers: a worker of two architectures counts twice). busy
// follows workers: 1 while the worker holds at least one running request,
// whatever its capacity (system:concurrent). Label sets that once had
// workers keep reporting 0, as in workers.
func externalWorkersByArchitecture(b *build) (*dto.MetricFamily, error) {
	g := b.gauges("external_workers_by_architecture", "architecture", "connected", "busy", "worker_type")
	for _, t := range b.rows("workers") {
		if _, err := g.fill(t); err != nil {
			return nil, err
		}
		if g.l.get("worker_type") != string(model.WorkerExternal) {
			continue
		}
		g.l.drop("worker_type")
		last := ""
		for _, a := range splitArchitectures(t.Labels["architectures"]) {
			if a == last {
				continue // the store sorts the list
			}
			last = a
			g.l.set("architecture", a)
			g.add(float64(t.Value))
		}
	}
	return g.family("Number of external workers that support each architecture, by architecture, connected (1/0) and busy (1/0); " +
		"a worker counts under every architecture it supports. Unlike the architecture_<arch> labels of workers, " +
		"a new architecture adds series without changing the others.")
}
