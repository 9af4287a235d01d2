package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/kiln-build/kiln/internal/model"
)

// Farm is the state of the farm that the dashboard's overview and workers
// page show beside their statistics: how many workers are in which state,
// and the pools with their status (live instances by state, runtime,
// budget used this month). Neither names a workspace, so it is the same
// for every visitor (the public metrics publish the same figures).
type Farm struct {
	Workers []WorkerCount
	Pools   []model.WorkerPool
}

// WorkerCount is how many workers of a type (and pool) are in a state.
type WorkerCount struct {
	Type      model.WorkerType
	PoolID    *int64
	Connected bool
	Busy      bool
	N         int64
}

// Farm reads the figures of Farm in one read transaction. Worker counts
// come from the running totals of the workers family (and the journal's
// changes not folded yet): O(series), however many workers and requests
// the farm has.
func (s *SQL) Farm(ctx context.Context) (*Farm, error) {
	out := &Farm{}
	err := s.readTx(ctx, func(t *tx) error {
		counts := map[WorkerCount]int64{}
		// the totals of the workers family, folded and still journaled
		if err := t.each(ctx, "SELECT labels, value FROM metric_totals WHERE family = 'workers' UNION ALL "+
			"SELECT labels, value FROM ("+s.journalChanges("metric_journal")+") j WHERE family = 'workers'", nil, func(r *sql.Rows) error {
			var labels string
			var n int64
			if err := r.Scan(&labels, &n); err != nil {
				return err
			}
			var l Labels
			if err := json.Unmarshal([]byte(labels), &l); err != nil {
				return fmt.Errorf("metric_totals workers %s: %w", labels, err)
			}
			k := WorkerCount{Type: model.WorkerType(l["worker_type"]), Connected: l["connected"] == "1", Busy: l["busy"] == "1"}
			if p, ok := l["worker_pool_id"]; ok {
				var id int64
				fmt.Sscan(p, &id)
				k.PoolID = &id
			}
			counts[k] += n
			return nil
		}); err != nil {
			return err
		}
		for k, n := range counts {
			if n != 0 {
				k.N = n
				out.Workers = append(out.Workers, k)
			}
		}
		sort.Slice(out.Workers, func(i, j int) bool {
			a, b := out.Workers[i], out.Workers[j]
			if a.Type != b.Type {
				return a.Type < b.Type
			}
			if a.Connected != b.Connected {
				return a.Connected
			}
			return a.Busy && !b.Busy
		})
		pools := s.workerPools()
		if err := t.each(ctx, pools.selectSQL()+" ORDER BY name", nil, func(r *sql.Rows) error {
			p, err := pools.def.scan(r)
			if err == nil {
				out.Pools = append(out.Pools, *p)
			}
			return err
		}); err != nil {
			return err
		}
		// O(pools + live instances), as the public endpoint's runtime
		for i := range out.Pools {
			if err := t.poolStatus(ctx, &out.Pools[i]); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}
