package dashboard

import (
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/statistics"
	"github.com/kiln-build/kiln/internal/store"
)

type overviewPage struct {
	Now      time.Time
	Queue    []statusCount
	Scopes   []model.Scope
	Workers  workerStates
	Pools    []poolView
	Hours    chart
	Days     chart
	SignedIn bool
}

// statusCount is how many requests are in a status.
type statusCount struct {
	Status model.Status
	N      int64
}

// queue sums counts per workspace into counts per status, every status
// listed, in the order of model.Statuses.
func queue(counts []store.StatusCount) []statusCount {
	by := map[model.Status]int64{}
	for _, c := range counts {
		by[c.Status] += c.N
	}
	out := make([]statusCount, len(model.Statuses))
	for i, st := range model.Statuses {
		out[i] = statusCount{st, by[st]}
	}
	return out
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

// overview is the farm at a glance: the queue by status and the runs of
// the last day and month (of the workspaces the visitor sees), the
// workers and pools, the scopes to drill into.
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
	counts, err := d.st.StatusCounts(v.ctx(), v.viewer, 0)
	if err != nil {
		return err
	}
	hours, days, err := statistics.Activity(v.ctx(), d.st, v.viewer, v.now)
	if err != nil {
		return err
	}
	v.render(200, "overview", overviewPage{Now: v.now, Queue: queue(counts), Scopes: scopes, Workers: countWorkers(farm.Workers),
		Pools: poolViews(farm.Pools, v.now), SignedIn: v.signedIn(), Hours: runsChart("last-24h", "Runs in the last 24 hours", hours, true, narrowChart),
		Days: runsChart("last-30d", "Runs in the last 30 days", days, false, narrowChart)})
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
