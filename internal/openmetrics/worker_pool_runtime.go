package openmetrics

import (
	"fmt"

	dto "github.com/prometheus/client_model/go"
)

func init() { register("worker_pool_runtime", workerPoolRuntime) }

// workerPoolRuntime is the accumulated runtime of every worker pool's
// instances, including those still running up to the snapshot: what a
// dynamic pool has cost. It only grows; rate() of it is the number of
// instances running.
func workerPoolRuntime(b *build) (*dto.MetricFamily, error) {
	g := b.gauges("worker_pool_runtime", labelPool)
	for id, seconds := range b.snap.PoolRuntime {
		name, ok := b.snap.PoolNames[id]
		if !ok {
			return nil, fmt.Errorf("runtime of unknown worker pool %d", id)
		}
		g.l.set(labelPool, name)
		g.add(seconds)
	}
	return g.family("Accumulated runtime in seconds of the instances of each worker pool, including running ones, by worker_pool.")
}
