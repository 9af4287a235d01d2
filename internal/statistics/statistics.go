package statistics

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// Source is where statistics come from: a store's rollups.
type Source interface {
	Rollup(ctx context.Context, q store.RollupQuery) (*store.Rollup, error)
}

// Selection narrows statistics to one scope or one workspace; the zero
// value is everything the viewer sees. The caller resolves names and
// refuses what the viewer may not see; the rollups apply the viewer again
// whatever the selection says.
type Selection struct {
	ScopeID     int64 `json:"scope,omitempty"`
	WorkspaceID int64 `json:"workspace,omitempty"`
}

// Outcomes are how finished requests end, as statistics count them.
var Outcomes = []string{"success", "failure", "error", "skipped", "aborted"}

// Report is every figure of a window and selection, from one snapshot.
type Report struct {
	Window    Window    `json:"-"`
	Selection Selection `json:"selection"`
	// Total is the whole selection.
	Total Figures `json:"total"`
	// Tasks, Scopes, Workspaces and WorkspaceTasks are the figures per
	// task (type and name), per scope, per workspace, and per task of each
	// workspace; each sorted by runs, most first.
	Tasks          []Group `json:"tasks"`
	Scopes         []Group `json:"scopes"`
	Workspaces     []Group `json:"workspaces"`
	WorkspaceTasks []Group `json:"workspace_tasks"`
	// Series is every hour (one-day windows) or day of the window, with
	// its runs by outcome.
	Series []Point `json:"series"`
}

// Group is the figures of one task, scope, workspace or task of a
// workspace; the fields that do not apply are empty.
type Group struct {
	TaskType    model.TaskType `json:"task_type,omitempty"`
	TaskName    string         `json:"task_name,omitempty"`
	ScopeID     int64          `json:"scope_id,omitempty"`
	Scope       string         `json:"scope,omitempty"`
	WorkspaceID int64          `json:"workspace_id,omitempty"`
	Workspace   string         `json:"workspace,omitempty"`
	Figures
}

// Figures are the statistics of a set of runs.
type Figures struct {
	// Runs is the number of requests that finished, Outcomes how.
	Runs     int64            `json:"runs"`
	Outcomes map[string]int64 `json:"outcomes"`
	// SuccessRate is success ÷ (success + failure + error), nil without
	// any of those.
	SuccessRate *float64 `json:"success_rate"`
	Duration    Summary  `json:"duration"`
	Wait        Summary  `json:"queue_wait"`
}

// Summary is a distribution of times: how many, and its percentiles.
type Summary struct {
	Histogram Histogram `json:"-"`
	Count     int64     `json:"count"`
	P50       *Quantile `json:"p50_seconds"`
	P90       *Quantile `json:"p90_seconds"`
	P99       *Quantile `json:"p99_seconds"`
	// Over counts the observations past the last bucket bound, whose
	// percentiles answer that bound.
	Over int64 `json:"over_last_bound"`
}

// MarshalJSON writes a percentile as its number of seconds.
func (q Quantile) MarshalJSON() ([]byte, error) { return json.Marshal(q.Value.Seconds()) }

// Point is one hour or day of a series.
type Point struct {
	Start    time.Time        `json:"start"`
	Runs     int64            `json:"runs"`
	Outcomes map[string]int64 `json:"outcomes"`
}

// MarshalJSON adds the window's bounds.
func (r *Report) MarshalJSON() ([]byte, error) {
	type plain Report
	return json.Marshal(struct {
		From       string `json:"from"`
		To         string `json:"to"`
		Days       int    `json:"days"`
		Resolution string `json:"series_resolution"`
		*plain
	}{r.Window.From.Format(time.DateOnly), r.Window.Last().Format(time.DateOnly), r.Window.Days(),
		map[bool]string{true: "hour", false: "day"}[r.Window.Hourly()], (*plain)(r)})
}

// Compute reads the rollups of the window and selection as v sees them, in
// one snapshot, and works out every figure. A nil v is kiln itself, which
// sees everything: a report of the whole farm.
func Compute(ctx context.Context, src Source, v *store.Viewer, w Window, sel Selection) (*Report, error) {
	ru, err := src.Rollup(ctx, store.RollupQuery{From: w.From, To: w.To, ScopeID: sel.ScopeID, WorkspaceID: sel.WorkspaceID,
		Hourly: w.Hourly(), Viewer: v})
	if err != nil {
		return nil, err
	}
	r := &Report{Window: w, Selection: sel, WorkspaceTasks: []Group{}} // [] in JSON, as the other lists
	total := &acc{}
	tasks, scopes, workspaces := map[[2]string]*acc{}, map[int64]*acc{}, map[int64]*acc{}
	for _, g := range ru.Groups {
		a := fromRollup(g)
		total.add(a)
		name := ru.Workspaces[g.WorkspaceID]
		into(tasks, [2]string{string(g.TaskType), g.TaskName}, Group{TaskType: g.TaskType, TaskName: g.TaskName}).add(a)
		into(scopes, name.ScopeID, Group{ScopeID: name.ScopeID, Scope: name.ScopeName}).add(a)
		into(workspaces, g.WorkspaceID, Group{ScopeID: name.ScopeID, Scope: name.ScopeName, WorkspaceID: g.WorkspaceID,
			Workspace: name.Name}).add(a)
		a.group = Group{TaskType: g.TaskType, TaskName: g.TaskName, ScopeID: name.ScopeID, Scope: name.ScopeName,
			WorkspaceID: g.WorkspaceID, Workspace: name.Name}
		r.WorkspaceTasks = append(r.WorkspaceTasks, a.figures())
	}
	r.Total = total.figures().Figures
	r.Tasks, r.Scopes, r.Workspaces = groups(tasks), groups(scopes), groups(workspaces)
	byRuns(r.WorkspaceTasks)
	r.Series = series(w, ru.Series)
	return r, nil
}

// acc accumulates runs.
type acc struct {
	group     Group
	outcomes  map[string]int64
	durations Histogram
	waits     Histogram
}

func fromRollup(g store.RollupGroup) *acc {
	return &acc{outcomes: g.Runs, durations: Histogram{Counts: g.Durations}, waits: Histogram{Counts: g.Waits}}
}

func (a *acc) add(o *acc) {
	if a.outcomes == nil {
		a.outcomes = map[string]int64{}
	}
	for k, n := range o.outcomes {
		a.outcomes[k] += n
	}
	a.durations.Merge(o.durations)
	a.waits.Merge(o.waits)
}

func into[K comparable](m map[K]*acc, k K, g Group) *acc {
	a := m[k]
	if a == nil {
		a = &acc{group: g}
		m[k] = a
	}
	return a
}

// figures works out the accumulated runs' statistics.
func (a *acc) figures() Group {
	g := a.group
	g.Outcomes = map[string]int64{}
	for _, o := range Outcomes {
		g.Outcomes[o] = a.outcomes[o]
		g.Runs += a.outcomes[o]
	}
	if verdicts := a.outcomes["success"] + a.outcomes["failure"] + a.outcomes["error"]; verdicts > 0 {
		rate := float64(a.outcomes["success"]) / float64(verdicts)
		g.SuccessRate = &rate
	}
	g.Duration = summarize(a.durations, true)
	g.Wait = summarize(a.waits, false)
	return g
}

func summarize(h Histogram, p99 bool) Summary {
	s := Summary{Histogram: h, Count: h.Count()}
	if h.Counts != nil {
		s.Over = h.Counts[len(Bounds)]
	}
	q := func(p int) *Quantile {
		if v, ok := h.Quantile(p); ok {
			return &v
		}
		return nil
	}
	s.P50, s.P90 = q(50), q(90)
	if p99 {
		s.P99 = q(99)
	}
	return s
}

func groups[K comparable](m map[K]*acc) []Group {
	out := make([]Group, 0, len(m))
	for _, a := range m {
		out = append(out, a.figures())
	}
	byRuns(out)
	return out
}

// byRuns sorts groups by runs, most first, then by name.
func byRuns(gs []Group) {
	slices.SortFunc(gs, func(a, b Group) int {
		return cmp.Or(cmp.Compare(b.Runs, a.Runs), cmp.Compare(a.Scope, b.Scope), cmp.Compare(a.Workspace, b.Workspace),
			cmp.Compare(a.TaskName, b.TaskName), cmp.Compare(a.TaskType, b.TaskType))
	})
}

// series lays the rollups' points on every period of the window.
func series(w Window, ps []store.RollupPoint) []Point {
	step := 24 * time.Hour
	if w.Hourly() {
		step = time.Hour
	}
	return points(w, step, ps)
}

// points lays the rollups' points on every step of the window.
func points(w Window, step time.Duration, ps []store.RollupPoint) []Point {
	var out []Point
	at := map[int64]int{}
	for t := w.From; t.Before(w.To); t = t.Add(step) {
		at[t.Unix()] = len(out)
		out = append(out, Point{Start: t, Outcomes: map[string]int64{}})
	}
	for _, p := range ps {
		i, ok := at[p.Period]
		if !ok {
			continue
		}
		out[i].Outcomes[p.Result] += p.Runs
		out[i].Runs += p.Runs
	}
	return out
}

// Activity is the runs of the last 24 hours by hour and of the last 30
// days by day, as v sees them: the farm overview's charts.
func Activity(ctx context.Context, src Source, v *store.Viewer, now time.Time) (hours, days []Point, err error) {
	end := now.UTC().Truncate(time.Hour).Add(time.Hour)
	hw := Window{From: end.Add(-24 * time.Hour), To: end}
	ru, err := src.Rollup(ctx, store.RollupQuery{From: hw.From, To: hw.To, Hourly: true, SeriesOnly: true, Viewer: v})
	if err != nil {
		return nil, nil, err
	}
	hours = points(hw, time.Hour, ru.Series)
	dw := LastDays(30, now)
	if ru, err = src.Rollup(ctx, store.RollupQuery{From: dw.From, To: dw.To, SeriesOnly: true, Viewer: v}); err != nil {
		return nil, nil, err
	}
	return hours, points(dw, 24*time.Hour, ru.Series), nil
}
