package dashboard

import (
	"cmp"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/statistics"
	"github.com/kiln-build/kiln/internal/store"
)

type statisticsPage struct {
	Now        time.Time
	Report     *statistics.Report
	Presets    []statistics.Preset
	Window     string
	From, To   string
	Scopes     []model.Scope
	Workspaces []model.Workspace
	Scope      *model.Scope
	Workspace  *model.Workspace
	Sort       string
	// All names the table shown whole (else each shows rowsShown rows).
	All       string
	URL       *url.URL
	Runs      chart
	Durations chart
	Waits     chart
	Slowest   []statistics.Group
	Failing   []statistics.Group
}

func (p statisticsPage) title() string { return "Statistics" }

// Columns are the sortable columns of the statistics tables: the query
// value and the header.
var statisticsColumns = []struct{ Key, Label string }{
	{"runs", "Runs"}, {"success", "Success rate"}, {"failures", "Failures"}, {"p50", "Run p50"}, {"p90", "Run p90"},
	{"p99", "Run p99"}, {"wait50", "Wait p50"}, {"wait90", "Wait p90"},
}

// APIURL is where the same figures are as JSON.
func (p statisticsPage) APIURL() string {
	q := url.Values{}
	if p.Window != "" {
		q.Set("window", p.Window)
	} else {
		q.Set("from", p.From)
		q.Set("to", p.To)
	}
	if p.Workspace != nil {
		q.Set("workspace", strconv.FormatInt(p.Workspace.ID, 10))
	} else if p.Scope != nil {
		q.Set("scope", strconv.FormatInt(p.Scope.ID, 10))
	}
	return "/api/1.0/statistics/?" + q.Encode()
}

// topShown is how many rows the slowest and most failing tables show.
const topShown = 10

// statistics shows the figures per task, scope and workspace over a
// window, as the visitor sees them, with the charts of runs over time and
// of run times.
func (d *Dashboard) statistics(v *visit) error {
	if err := v.onlyParams("window", "from", "to", "scope", "workspace", "sort", "all"); err != nil {
		return err
	}
	q := v.r.URL.Query()
	p := statisticsPage{Now: v.now, Presets: statistics.Presets, URL: v.r.URL, Sort: q.Get("sort"), All: q.Get("all")}
	switch p.All {
	case "", "tasks", "scopes", "workspaces":
	default:
		return badRequest("all must name a table (tasks, scopes or workspaces), not %q", p.All)
	}
	var w statistics.Window
	var err error
	switch {
	case q.Get("from") != "" || q.Get("to") != "":
		if w, err = statistics.Between(q.Get("from"), q.Get("to")); err != nil {
			return badRequest("%v", err)
		}
		p.From, p.To = q.Get("from"), q.Get("to")
	default:
		p.Window = q.Get("window")
		if p.Window == "" {
			p.Window = statistics.DefaultPreset
		}
		if w, err = statistics.ParseWindow(p.Window, v.now); err != nil {
			return badRequest("%v", err)
		}
		p.From, p.To = w.From.Format(time.DateOnly), w.Last().Format(time.DateOnly)
	}
	if p.Sort == "" {
		p.Sort = "runs"
	}
	if !slices.ContainsFunc(statisticsColumns, func(c struct{ Key, Label string }) bool { return c.Key == p.Sort }) {
		return badRequest("sort must be one of the columns (runs, success, failures, p50, p90, p99, wait50, wait90), not %q", p.Sort)
	}
	if p.Scopes, err = v.scopes(); err != nil {
		return err
	}
	var sel statistics.Selection
	if s := q.Get("workspace"); s != "" {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return badRequest("workspace must be a workspace's id, not %q", s)
		}
		if p.Workspace, err = d.st.Workspaces().Get(v.ctx(), id, v.viewer); err != nil {
			return hiddenAs(err, badRequest("there is no workspace %d, or you may not see it", id))
		}
		sel.WorkspaceID = id
		if q.Get("scope") == "" {
			q.Set("scope", strconv.FormatInt(p.Workspace.ScopeID, 10))
		}
	}
	if s := q.Get("scope"); s != "" {
		id, err := strconv.ParseInt(s, 10, 64)
		i := slices.IndexFunc(p.Scopes, func(sc model.Scope) bool { return sc.ID == id })
		if err != nil || i < 0 || p.Workspace != nil && p.Workspace.ScopeID != id {
			return badRequest("there is no scope %q, or you may not see it (or the workspace is not in it)", s)
		}
		p.Scope = &p.Scopes[i]
		if sel.WorkspaceID == 0 {
			sel.ScopeID = id
		}
		if p.Workspaces, err = d.st.Workspaces().List(v.ctx(), store.Query{Limit: store.MaxPageSize, Viewer: v.viewer,
			Filter: map[string]string{"scope": s}}); err != nil {
			return err
		}
	}
	if p.Report, err = statistics.Compute(v.ctx(), d.st, v.viewer, w, sel); err != nil {
		return err
	}
	r := p.Report
	for _, gs := range [][]statistics.Group{r.Tasks, r.Scopes, r.Workspaces} {
		sortGroups(gs, p.Sort)
	}
	runsTitle := "Runs per day"
	if w.Hourly() {
		runsTitle = "Runs per hour"
	}
	p.Runs = runsChart("runs", runsTitle, r.Series, w.Hourly(), wideChart)
	p.Durations = durationChart("durations", "Run times", r.Total.Duration.Histogram, narrowChart)
	p.Waits = durationChart("waits", "Queue waits", r.Total.Wait.Histogram, narrowChart)
	p.Slowest = top(r.WorkspaceTasks, func(g statistics.Group) bool { return g.Duration.P90 != nil }, "p90")
	p.Failing = top(r.WorkspaceTasks, func(g statistics.Group) bool { return failures(g) > 0 }, "failures")
	v.render(200, "statistics", p)
	return nil
}

func failures(g statistics.Group) int64 { return g.Outcomes["failure"] + g.Outcomes["error"] }

// top is the first topShown groups that keep holds for, by key.
func top(gs []statistics.Group, keep func(statistics.Group) bool, key string) []statistics.Group {
	var out []statistics.Group
	for _, g := range gs {
		if keep(g) {
			out = append(out, g)
		}
	}
	sortGroups(out, key)
	return out[:min(len(out), topShown)]
}

// sortGroups orders groups by a column: the worst first (most runs, lowest
// success rate, most failures, longest times), ties by runs then name.
func sortGroups(gs []statistics.Group, key string) {
	q := func(x *statistics.Quantile) time.Duration {
		if x == nil {
			return -1
		}
		return x.Value
	}
	value := func(g statistics.Group) float64 {
		switch key {
		case "success":
			if g.SuccessRate == nil {
				return -2 // no verdict: last
			}
			return -*g.SuccessRate
		case "failures":
			return float64(failures(g))
		case "p50":
			return float64(q(g.Duration.P50))
		case "p90":
			return float64(q(g.Duration.P90))
		case "p99":
			return float64(q(g.Duration.P99))
		case "wait50":
			return float64(q(g.Wait.P50))
		case "wait90":
			return float64(q(g.Wait.P90))
		}
		return float64(g.Runs)
	}
	slices.SortStableFunc(gs, func(a, b statistics.Group) int {
		return cmp.Or(cmp.Compare(value(b), value(a)), cmp.Compare(b.Runs, a.Runs))
	})
}

// groupTable is a table of statistics.Group as the "groups" template
// shows it: its rows' cells are formatted here, once, rather than by
// template calls per cell (a page of a few hundred rows spent most of its
// time in them).
type groupTable struct {
	ID, Caption string
	// Kind is what a row is: task, scope, workspace or workspace-task.
	Kind     string
	Rows     []groupRow
	Sortable bool
	Sort     string
	URL      *url.URL
	Empty    string
	// All is the number of groups when Rows shows only the first ones;
	// AllURL the page that shows them all.
	All    int
	AllURL string
}

// groupRow is one group and its formatted figures.
type groupRow struct {
	statistics.Group
	Cells []cell
}

// cell is a figure of a row: its text, and its exact value for scripts
// and tests (seconds, or a ratio).
type cell struct {
	Figure, Text, Title string
	Seconds, Rate       string
}

// rowsShown bounds the rows of a table of a statistics page: what the
// sort puts first. A farm's workspaces grow in number with the farm; the
// page should not (its "all" link lists them all).
const rowsShown = 50

func cells(g statistics.Group) []cell {
	q := func(figure string, x *statistics.Quantile) cell {
		if x == nil {
			return cell{Figure: figure, Text: "—"}
		}
		c := cell{Figure: figure, Text: duration(x.Value), Seconds: strconv.FormatFloat(x.Value.Seconds(), 'f', -1, 64)}
		if x.Over {
			c.Text, c.Title = "> "+c.Text, "beyond the last bucket"
		}
		return c
	}
	rate := cell{Figure: "success_rate", Text: percent(g.SuccessRate)}
	if g.SuccessRate != nil {
		rate.Rate = strconv.FormatFloat(*g.SuccessRate, 'f', -1, 64)
	}
	return []cell{
		{Figure: "runs", Text: strconv.FormatInt(g.Runs, 10)}, rate,
		{Figure: "failures", Text: strconv.FormatInt(failures(g), 10)},
		q("p50", g.Duration.P50), q("p90", g.Duration.P90), q("p99", g.Duration.P99), q("wait50", g.Wait.P50), q("wait90", g.Wait.P90),
	}
}

// Tables are the page's tables of groups.
func (p statisticsPage) Tables() []groupTable {
	t := func(id, caption, kind string, gs []statistics.Group, sortable bool, empty string) groupTable {
		g := groupTable{ID: id, Caption: caption, Kind: kind, Sortable: sortable, Sort: p.Sort, URL: p.URL, Empty: empty}
		if len(gs) > rowsShown && p.All != id {
			g.All, g.AllURL = len(gs), with(p.URL, "all", id)+"#"+id+"-h"
			gs = gs[:rowsShown]
		}
		for _, x := range gs {
			g.Rows = append(g.Rows, groupRow{Group: x, Cells: cells(x)})
		}
		return g
	}
	const none = "No runs in this window."
	out := []groupTable{t("tasks", "Per task", "task", p.Report.Tasks, true, none)}
	if p.Workspace == nil {
		if p.Scope == nil {
			out = append(out, t("scopes", "Per scope", "scope", p.Report.Scopes, true, none))
		}
		out = append(out, t("workspaces", "Per workspace", "workspace", p.Report.Workspaces, true, none))
	}
	return append(out,
		t("slowest", "Slowest (run time p90)", "workspace-task", p.Slowest, false, none),
		t("failing", "Most failing (failures and errors)", "workspace-task", p.Failing, false, "No failures in this window."))
}
