package dashboard

import (
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// poolView is a worker pool as the overview and the workers page show it:
// its settings that say what it may do, its live instances by state, its
// runtime and the budget it used this month — what worker_pool_runtime
// and the workers family already publish, and no provider settings or
// errors (those are admins', as the API keeps them).
type poolView struct {
	Pool model.WorkerPool
	now  time.Time
}

func poolViews(ps []model.WorkerPool, now time.Time) []poolView {
	out := make([]poolView, len(ps))
	for i, p := range ps {
		out[i] = poolView{Pool: p, now: now}
	}
	return out
}

// Runtime is the runtime of all the pool's instances: the recorded
// runtime of the stopped ones and the age of the live ones, as
// worker_pool_runtime counts it.
func (p poolView) Runtime() time.Duration {
	return time.Duration(p.Pool.RuntimeSeconds * float64(time.Second))
}

// stateCount is how many live instances are in a state.
type stateCount struct {
	State model.InstanceState
	N     int
}

// States are the live instances by state, in the order of their life,
// the states with none left out.
func (p poolView) States() []stateCount {
	var out []stateCount
	for _, st := range model.LiveInstanceStates {
		if n := p.Pool.Status.Instances[st]; n > 0 {
			out = append(out, stateCount{st, n})
		}
	}
	return out
}

// Live counts the live instances.
func (p poolView) Live() int { return p.Pool.Status.Live() }

// State is the one word that says whether the pool can start instances,
// as `kiln pool list` says it.
func (p poolView) State() string {
	st := p.Pool.Status
	switch {
	case st.Deleting:
		return "deleting"
	case !p.Pool.Enabled:
		return "disabled"
	case st.BackoffUntil != nil && p.now.Before(*st.BackoffUntil):
		return "backing off"
	case st.Failures > 0 && st.LastError != "":
		return "failing"
	}
	return "active"
}

// IdleTimeout is how long an instance may stay idle.
func (p poolView) IdleTimeout() time.Duration { return time.Duration(p.Pool.IdleTimeout) }

// StateClass is State as a CSS class name.
func (p poolView) StateClass() string { return strings.ReplaceAll(p.State(), " ", "-") }

// Used is the runtime the pool's instances used this calendar month.
func (p poolView) Used() time.Duration {
	return time.Duration(p.Pool.Status.BudgetUsedSeconds * float64(time.Second))
}

// Budget is the pool's monthly runtime budget; 0 when it has none.
func (p poolView) Budget() time.Duration {
	if b := p.Pool.MaxSecondsPerMonth; b != nil {
		return time.Duration(*b) * time.Second
	}
	return 0
}

// BudgetShare is the share of the month's budget used, for percent; nil
// without a budget.
func (p poolView) BudgetShare() *float64 {
	b := p.Budget()
	if b <= 0 {
		return nil
	}
	r := p.Used().Seconds() / b.Seconds()
	return &r
}
