package dashboard

import (
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// pathID reads the numeric id of the page's path; anything else names no
// object, so it is the page's 404.
func (v *visit) pathID(what string) (int64, error) {
	id, err := strconv.ParseInt(v.r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, notFound(what)
	}
	return id, nil
}

// hidden turns the store's "not found (or not visible)" into the page's
// 404 about what, and passes other errors on.
func hidden(err error, what string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound(what)
	}
	return err
}

type scopePage struct {
	Scope      model.Scope
	Workspaces []workspaceRow
	Statuses   []model.Status
}

// workspaceRow is a workspace with how many of its requests are in each
// status (in the order of model.Statuses).
type workspaceRow struct {
	model.Workspace
	Counts []int64
}

func (p scopePage) title() string { return p.Scope.Name }

// scope lists the workspaces of a scope that the visitor sees.
func (d *Dashboard) scope(v *visit) error {
	if err := v.onlyParams(); err != nil {
		return err
	}
	id, err := v.pathID("scope")
	if err != nil {
		return err
	}
	sc, err := d.st.Scopes().Get(v.ctx(), id, v.viewer)
	if err != nil || !v.viewer.SeesScope(sc.ID) {
		return hidden(orNotFound(err), "scope")
	}
	wss, err := d.st.Workspaces().List(v.ctx(), store.Query{Limit: store.MaxPageSize, Viewer: v.viewer,
		Filter: map[string]string{"scope": strconv.FormatInt(sc.ID, 10)}})
	if err != nil {
		return err
	}
	counts, err := d.st.StatusCounts(v.ctx(), v.viewer, sc.ID)
	if err != nil {
		return err
	}
	p := scopePage{Scope: *sc, Statuses: model.Statuses}
	row := map[int64]int{}
	for _, ws := range wss {
		row[ws.ID] = len(p.Workspaces)
		p.Workspaces = append(p.Workspaces, workspaceRow{Workspace: ws, Counts: make([]int64, len(model.Statuses))})
	}
	for _, c := range counts {
		if i, ok := row[c.WorkspaceID]; ok {
			p.Workspaces[i].Counts[slices.Index(model.Statuses, c.Status)] += c.N
		}
	}
	v.render(200, "scope", p)
	return nil
}

// orNotFound is err, or ErrNotFound when there is none (an object the
// store returned but the visitor may not see).
func orNotFound(err error) error {
	if err == nil {
		return store.ErrNotFound
	}
	return err
}

// listFilters are the filters of a workspace's lists, as the query string
// gives them (the form shows them back).
type listFilters struct {
	View         string // "requests" or "workflows"
	Status       string
	Task         string
	Architecture string
	Result       string
	Worker       string
	From, To     string // dates, YYYY-MM-DD, To included
}

// Active reports whether any filter narrows the list.
func (f listFilters) Active() bool {
	return f.Status != "" || f.Task != "" || f.Architecture != "" || f.Result != "" || f.Worker != "" || f.From != "" || f.To != ""
}

type workspacePage struct {
	Now time.Time
	// Counts are the workspace's requests by status.
	Counts    []statusCount
	Scope     model.Scope
	Workspace model.Workspace
	Filters   listFilters
	Requests  []requestRow
	// Next is the link to the following (older) page; First the link
	// back to the newest one.
	Next, First string
	Partial     bool
	Statuses    []model.Status
	Results     []model.Result
	SignedIn    bool
	URL         *url.URL
}

func (p workspacePage) title() string { return p.Workspace.Name }

// Scanned is how many requests a short page looked at.
func (workspacePage) Scanned() int { return store.BrowseScan }

// Table is the page's list.
func (p workspacePage) Table() requestTable {
	empty := "No work requests here yet."
	if p.Filters.View == "workflows" {
		empty = "No workflows here yet."
	}
	if p.Filters.Active() {
		empty = "Nothing matches these filters."
	}
	return requestTable{Rows: p.Requests, Now: p.Now, Workers: p.SignedIn, Caption: "Work requests of " + p.Workspace.Name, Empty: empty}
}

// requestTable is a list of requests as the "requests" template shows it.
type requestTable struct {
	Rows    []requestRow
	Now     time.Time
	Workers bool // show the worker column (signed-in visitors)
	Caption string
	Empty   string
}

// requestRow is a work request as lists show it.
type requestRow struct {
	model.WorkRequest
	Architecture string
	Worker       string
	Wait         *time.Duration
	Ran          *time.Duration
}

// workspace lists a workspace's work requests (or its workflows), newest
// first, with filters and keyset pages.
func (d *Dashboard) workspace(v *visit) error {
	if err := v.onlyParams("view", "status", "task", "arch", "result", "worker", "from", "to", "before"); err != nil {
		return err
	}
	id, err := v.pathID("workspace")
	if err != nil {
		return err
	}
	ws, err := d.st.Workspaces().Get(v.ctx(), id, v.viewer)
	if err != nil {
		return hidden(err, "workspace")
	}
	sc, err := d.st.Scopes().Get(v.ctx(), ws.ScopeID, nil)
	if err != nil {
		return err
	}
	q := v.r.URL.Query()
	f := listFilters{View: q.Get("view"), Status: q.Get("status"), Task: q.Get("task"), Architecture: q.Get("arch"),
		Result: q.Get("result"), Worker: q.Get("worker"), From: q.Get("from"), To: q.Get("to")}
	b := store.Browse{WorkspaceID: ws.ID, Viewer: v.viewer, Limit: 50, TaskName: f.Task, Architecture: f.Architecture}
	switch f.View {
	case "", "requests":
		f.View = "requests"
	case "workflows":
		b.Workflows = true
	default:
		return badRequest("view must be requests or workflows, not %q", f.View)
	}
	if f.Status != "" {
		if !model.Status(f.Status).Valid() {
			return badRequest("status must be one of %s, not %q", joinEnum(model.Statuses), f.Status)
		}
		b.Status = model.Status(f.Status)
	}
	if f.Result != "" {
		if r := model.Result(f.Result); !r.Valid() || r == model.ResultNone {
			return badRequest("result must be one of %s, not %q", joinEnum(results), f.Result)
		}
		b.Result = model.Result(f.Result)
	}
	if f.Worker != "" {
		w, err := d.st.Workers().Lookup(v.ctx(), f.Worker, nil)
		if err != nil {
			return hiddenAs(err, badRequest("there is no worker named %q", f.Worker))
		}
		b.WorkerID = w.ID
	}
	if b.From, err = day(f.From, "from"); err != nil {
		return err
	}
	if b.To, err = day(f.To, "to"); err != nil {
		return err
	}
	if !b.To.IsZero() {
		b.To = b.To.AddDate(0, 0, 1) // the whole day
	}
	if s := q.Get("before"); s != "" {
		c, err := store.ParseCursor(s)
		if err != nil {
			return badRequest("before: %v", err)
		}
		b.Before = &c
	}
	page, err := d.st.BrowseWorkRequests(v.ctx(), b)
	if err != nil {
		return hidden(err, "workspace")
	}
	counts, err := d.st.StatusCounts(v.ctx(), v.viewer, 0, ws.ID)
	if err != nil {
		return err
	}
	rows, err := v.rows(page.Items)
	if err != nil {
		return err
	}
	p := workspacePage{Now: v.now, Counts: queue(counts), Scope: *sc, Workspace: *ws, Filters: f, Requests: rows, Partial: page.Partial,
		Statuses: model.Statuses, Results: results, SignedIn: v.signedIn(), URL: v.r.URL}
	if page.Next != nil {
		p.Next = with(v.r.URL, "before", page.Next.String())
	}
	if b.Before != nil {
		p.First = with(v.r.URL, "before", "")
	}
	v.render(200, "workspace", p)
	return nil
}

// results are the results a finished request can have.
var results = []model.Result{model.ResultSuccess, model.ResultFailure, model.ResultError, model.ResultSkipped}

func joinEnum[T ~string](vs []T) string {
	s := make([]string, len(vs))
	for i, x := range vs {
		s[i] = string(x)
	}
	return strings.Join(s, ", ")
}

// hiddenAs is as, when err says the object does not exist.
func hiddenAs(err, as error) error {
	if errors.Is(err, store.ErrNotFound) {
		return as
	}
	return err
}

// day reads a date (YYYY-MM-DD, UTC) of a filter.
func day(s, param string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return time.Time{}, badRequest("%s must be a date such as 2026-12-01, not %q", param, s)
	}
	return t, nil
}

// rows prepares requests for a list: their architecture, their worker's
// name (for signed-in visitors, to whom the API shows workers), how long
// they waited and ran.
func (v *visit) rows(items []model.WorkRequest) ([]requestRow, error) {
	names := map[int64]string{}
	if v.signedIn() {
		var ids []int64
		for _, wr := range items {
			if wr.WorkerID != nil && !slices.Contains(ids, *wr.WorkerID) {
				ids = append(ids, *wr.WorkerID)
			}
		}
		var err error
		if names, err = v.d.st.WorkerNames(v.ctx(), ids); err != nil {
			return nil, err
		}
	}
	out := make([]requestRow, len(items))
	for i, wr := range items {
		r := requestRow{WorkRequest: wr}
		if wr.TaskType == model.TaskWorker {
			r.Architecture = store.ParseWorkerTaskData(wr.Data).HostArchitecture
		}
		if wr.WorkerID != nil {
			r.Worker = names[*wr.WorkerID]
		}
		r.Wait, r.Ran = timing(&wr, v.now)
		out[i] = r
	}
	return out, nil
}

// timing is how long a request waited before it started, and how long it
// ran (so far, while running): the execution time kiln counts when the
// request completed, else the clock.
func timing(wr *model.WorkRequest, now time.Time) (wait, ran *time.Duration) {
	if wr.StartedAt == nil {
		if wr.Status == model.StatusPending {
			w := now.Sub(wr.CreatedAt)
			return &w, nil
		}
		return nil, nil
	}
	w := wr.StartedAt.Sub(wr.CreatedAt)
	wait = &w
	switch {
	case wr.ExecutionTime != nil:
		r := time.Duration(*wr.ExecutionTime) * time.Microsecond
		ran = &r
	case wr.CompletedAt != nil:
		r := wr.CompletedAt.Sub(*wr.StartedAt)
		ran = &r
	case wr.Status == model.StatusRunning:
		r := now.Sub(*wr.StartedAt)
		ran = &r
	}
	return wait, ran
}
