package openmetrics

import (
	"fmt"

	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("worker_pool_runtime", workerPoolRuntime) }

// workerPoolRuntime is the accumulated runtime of every worker pool's
// instances, including those still running up to the snapshot: what a
// dynamic pool has cost. It only grows; rate() of it is the number of
// instances running.
func workerPoolRuntime(s *store.Snapshot) (*dto.MetricFamily, error) {
	g := newGauges()
	for id, seconds := range s.PoolRuntime {
		name, ok := s.PoolNames[id]
		if !ok {
			return nil, fmt.Errorf("runtime of unknown worker pool %d", id)
		}
		g.add(labelSet{labelPool: name}, seconds)
	}
	return g.family("worker_pool_runtime",
		"Accumulated runtime in seconds of the instances of each worker pool, including running ones, by worker_pool."), nil
}
