package api

import (
	"net/http"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/statistics"
)

// statisticsRoutes: GET statistics/ answers the figures of package
// statistics — runs, outcomes, success rate, run time and queue wait
// percentiles, per task, scope, workspace and task of each workspace, and
// the runs per day (or hour) — over a window, to anyone, about what they
// see: a workspace the caller may not see adds to no figure. It is the
// dashboard's statistics page as JSON, for scripts and reports.
//
// Parameters: window (days up to today, "7d" by default, 1d to 366d) or
// from and to (days, both included, YYYY-MM-DD, UTC); scope (name or id)
// or workspace ("scope/name" or id) to narrow the figures. A scope or
// workspace the caller may not see is refused as one that does not exist.
func (a *API) statisticsRoutes() []Route {
	return []Route{{"GET " + Prefix + "statistics/{$}", a.endpoint(statisticsReport)}}
}

func statisticsReport(c *call) error {
	if err := c.anyone(); err != nil {
		return err
	}
	q := c.r.URL.Query()
	for k, vs := range q {
		switch k {
		case "window", "from", "to", "scope", "workspace":
			if len(vs) != 1 {
				return invalidField(k, "give the query parameter %q once", k)
			}
		default:
			return invalidField(k, "unknown query parameter %q; statistics take window, from, to, scope and workspace", k)
		}
	}
	var w statistics.Window
	var err error
	switch from, to := q.Get("from"), q.Get("to"); {
	case from != "" || to != "":
		if q.Has("window") {
			return invalidField("window", "give a window or from and to, not both")
		}
		if from == "" || to == "" {
			return invalidField(map[bool]string{true: "from", false: "to"}[from == ""], "from and to go together")
		}
		if w, err = statistics.Between(from, to); err != nil {
			return invalidField("from", "%v", err)
		}
	default:
		name := q.Get("window")
		if name == "" {
			name = statistics.DefaultPreset
		}
		if w, err = statistics.ParseWindow(name, c.a.now()); err != nil {
			return invalidField("window", "%v", err)
		}
	}
	var sel statistics.Selection
	if s := q.Get("scope"); s != "" {
		if q.Has("workspace") {
			return invalidField("scope", "give a scope or a workspace, not both")
		}
		scope, err := c.visibleScopeRef("scope", parseRef(s))
		if err != nil {
			return err
		}
		sel.ScopeID = scope.ID
	}
	if s := q.Get("workspace"); s != "" {
		ws, err := c.visibleWorkspaceRef("workspace", parseRef(s))
		if err != nil {
			return err
		}
		sel.WorkspaceID = ws.ID
	}
	r, err := statistics.Compute(c.ctx(), c.a.st, c.viewer(), w, sel)
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, r)
}

// visibleScopeRef resolves a scope the caller's token lets it see; one
// outside a scope restriction is as unknown as one that does not exist.
func (c *call) visibleScopeRef(field string, r ref) (*model.Scope, error) {
	s, err := c.scopeRef(field, r)
	if err != nil || c.seesScope(s.ID) {
		return s, err
	}
	if r.name != "" {
		return nil, invalidField(field, "no scope named %q", r.name)
	}
	return nil, invalidField(field, "no scope with id %d", r.id)
}
