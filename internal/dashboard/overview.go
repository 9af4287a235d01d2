package dashboard

import (
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

type overviewPage struct {
	Now      time.Time
	Scopes   []model.Scope
	Workers  workerStates
	Pools    []store.PoolSummary
	SignedIn bool
}

func (overviewPage) title() string { return "Farm overview" }

// workerStates counts workers by state, every type together.
type workerStates struct {
	Idle, Busy, Disconnected, BusyDisconnected int64
}

func (s workerStates) Connected() int64 { return s.Idle + s.Busy }

func countWorkers(counts []store.WorkerCount) workerStates {
	var s workerStates
	for _, c := range counts {
		switch {
		case c.Connected && c.Busy:
			s.Busy += c.N
		case c.Connected:
			s.Idle += c.N
		case c.Busy:
			// lost its connection while running: counted disconnected,
			// its request waits for the heartbeat timeout
			s.Disconnected += c.N
			s.BusyDisconnected += c.N
		default:
			s.Disconnected += c.N
		}
	}
	return s
}

// overview is the farm at a glance: the scopes to drill into, the
// workers and pools.
func (d *Dashboard) overview(v *visit) error {
	if err := v.onlyParams(); err != nil {
		return err
	}
	scopes, err := v.scopes()
	if err != nil {
		return err
	}
	farm, err := d.st.Farm(v.ctx())
	if err != nil {
		return err
	}
	v.render(200, "overview", overviewPage{Now: v.now, Scopes: scopes, Workers: countWorkers(farm.Workers), Pools: farm.Pools,
		SignedIn: v.signedIn()})
	return nil
}

// scopes are the scopes the visitor sees: all of them, or the one a
// scope-restricted token allows (as the API lists them).
func (v *visit) scopes() ([]model.Scope, error) {
	all, err := v.d.st.Scopes().List(v.ctx(), store.Query{Limit: store.MaxPageSize})
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, s := range all {
		if v.viewer.SeesScope(s.ID) {
			out = append(out, s)
		}
	}
	return out, nil
}
