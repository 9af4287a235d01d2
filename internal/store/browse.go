package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// Browse selects one page of a workspace's work requests, newest first,
// for the dashboard's lists. The zero value of each filter means "any".
type Browse struct {
	WorkspaceID int64
	// Workflows keeps only the roots of workflows.
	Workflows    bool
	Status       model.Status
	TaskName     string
	Architecture string
	Result       model.Result
	WorkerID     int64
	// From and To bound the creation time: From ≤ created_at < To.
	From, To time.Time
	// Before continues a list after the last request of its previous
	// page (Page.Next).
	Before *Cursor
	// Limit is the page size: 1 to MaxPageSize, DefaultPageSize when 0.
	Limit int
	// Scan bounds the rows a page with residual filters looks at;
	// BrowseScan when 0.
	Scan   int
	Viewer *Viewer
}

// Cursor is a position in a list ordered by (created_at, id), newest
// first: the next page holds what comes strictly after it.
type Cursor struct {
	CreatedAt time.Time
	ID        int64
}

// String is the cursor as a URL parameter: microseconds and id.
func (c Cursor) String() string {
	return strconv.FormatInt(toMicros(c.CreatedAt), 10) + "." + strconv.FormatInt(c.ID, 10)
}

// ParseCursor reads Cursor.String's form.
func ParseCursor(s string) (Cursor, error) {
	at, id, ok := strings.Cut(s, ".")
	us, err1 := strconv.ParseInt(at, 10, 64)
	n, err2 := strconv.ParseInt(id, 10, 64)
	if !ok || err1 != nil || err2 != nil || n <= 0 {
		return Cursor{}, fmt.Errorf("%q is not a list position (microseconds.id)", s)
	}
	return Cursor{CreatedAt: fromMicros(us), ID: n}, nil
}

// Page is one page of a Browse.
type Page struct {
	Items []model.WorkRequest
	// Next continues the list; nil when nothing older matches.
	Next *Cursor
	// Partial says that the page stopped after Browse.Scan candidates,
	// with fewer than Limit matches: older matches may follow at Next.
	Partial bool
}

// BrowseScan bounds the rows one page looks at. A page walks one index
// range — the workspace's requests, or those of one status, task name or
// architecture — newest first; the filters that no index serves (result,
// worker, or the second of status, task name and architecture) are checked on
// at most this many rows of it. A page with rare matches is then short
// (Partial) rather than slow, and the next one goes on where it stopped.
const BrowseScan = 5000

// BrowseWorkRequests returns one page of b. A workspace the viewer does
// not see is ErrNotFound. Every statement reads one index range of at
// most BrowseScan (or Limit+1) entries: the cost of a page does not
// depend on how many requests the workspace holds.
func (s *SQL) BrowseWorkRequests(ctx context.Context, b Browse) (*Page, error) {
	limit := b.Limit
	if limit <= 0 {
		limit = DefaultPageSize
	}
	limit = min(limit, MaxPageSize)
	var page *Page
	err := s.readTx(ctx, func(t *tx) error {
		if _, err := s.workspacesT().get(ctx, t, b.WorkspaceID, b.Viewer, false); err != nil {
			return err
		}
		var err error
		page, err = s.browse(ctx, t, b, limit)
		return err
	})
	return page, err
}

// browseQuery is the statement of one page of b: the index range's rows,
// newest first, limit+1 of them. With residual filters it is a walk: the
// database pulls rows from a window of the range — its first b.scan()
// entries — until limit+1 match, or the window ends.
//
// The index is named on SQLite (INDEXED BY), whose planner may otherwise
// prefer the workspace's index with a time range, filtering the status —
// a walk no LIMIT bounds; PostgreSQL's planner picks it by itself.
func browseQuery(d Dialect, b Browse, limit int) (q string, args []any, walk bool, index string) {
	var w where
	from, index, residual := browseRange(d, b, &w, true)
	const order = " ORDER BY created_at DESC, id DESC"
	cols := "id, " + strings.Join(workRequestDef().columns, ", ")
	if len(residual) == 0 {
		return "SELECT " + cols + from + w.sql() + order + " LIMIT " + strconv.Itoa(limit+1), w.args, false, index
	}
	return "SELECT " + cols + " FROM (SELECT " + cols + from + w.sql() + order + " LIMIT " + strconv.Itoa(b.scan()) +
		") x WHERE " + strings.Join(residual, " AND ") + order + " LIMIT " + strconv.Itoa(limit+1), w.args, true, index
}

// windowEndQuery is the statement of the last position of a walk's
// window, where a page with too few matches stops and the next one goes
// on; it reads the index alone.
func windowEndQuery(d Dialect, b Browse) (string, []any) {
	var w where
	from, _, _ := browseRange(d, b, &w, false)
	return "SELECT created_at, id" + from + w.sql() + " ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET " +
		strconv.Itoa(b.scan()-1), w.args
}

// browseRange adds to w the conditions of b's index range, and returns the
// FROM clause, the index and, when residual is asked for, the conditions
// no index serves (their arguments bound in w too).
func browseRange(d Dialect, b Browse, w *where, residual bool) (from, index string, rest []string) {
	w.add("workspace_id = ?", b.WorkspaceID)
	status, task, arch := b.Status != "", b.TaskName != "", b.Architecture != ""
	index = "work_requests_browse"
	switch {
	case b.Workflows:
		w.add("parent_id IS NULL AND task_type = 'Workflow'")
		index = "work_requests_browse_workflows"
	case status:
		w.add("status = ?", string(b.Status))
		status = false
		index = "work_requests_browse_status"
	case task:
		w.add("task_name = ?", b.TaskName)
		task = false
		index = "work_requests_browse_task"
	case arch:
		w.add(architecture+" = ?", b.Architecture)
		arch = false
		index = "work_requests_browse_arch"
	}
	from = " FROM work_requests"
	if d == SQLite {
		from += " INDEXED BY " + index
	}
	if !b.From.IsZero() {
		w.add("created_at >= ?", toMicros(b.From))
	}
	if !b.To.IsZero() {
		w.add("created_at < ?", toMicros(b.To))
	}
	if b.Before != nil {
		w.add("(created_at, id) < (?, ?)", toMicros(b.Before.CreatedAt), b.Before.ID)
	}
	if !residual {
		return from, index, nil
	}
	if status {
		rest = append(rest, w.bind("status = ?", string(b.Status)))
	}
	if task {
		rest = append(rest, w.bind("task_name = ?", b.TaskName))
	}
	if arch {
		rest = append(rest, w.bind(architecture+" = ?", b.Architecture))
	}
	if b.Result != "" {
		rest = append(rest, w.bind("result = ?", string(b.Result)))
	}
	if b.WorkerID != 0 {
		rest = append(rest, w.bind("worker_id = ?", b.WorkerID))
	}
	return from, index, rest
}

// architecture is the expression of a request's host architecture, as
// its index names it.
const architecture = "(data->>'host_architecture')"

// scan is the bound of b's walk.
func (b Browse) scan() int {
	if b.Scan > 0 {
		return b.Scan
	}
	return BrowseScan
}

func (s *SQL) browse(ctx context.Context, t *tx, b Browse, limit int) (*Page, error) {
	q, args, walk, _ := browseQuery(s.dialect, b, limit)
	tb := s.workRequests()
	page := &Page{Items: []model.WorkRequest{}}
	if err := t.each(ctx, q, args, func(r *sql.Rows) error {
		wr, err := tb.def.scan(r)
		if err == nil {
			page.Items = append(page.Items, *wr)
		}
		return err
	}); err != nil {
		return nil, err
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		last := page.Items[limit-1]
		page.Next = &Cursor{last.CreatedAt, last.ID}
		return page, nil
	}
	if !walk {
		return page, nil
	}
	// too few matches in the window: if the range goes on past it, the
	// next page starts where the window ended
	q, args = windowEndQuery(s.dialect, b)
	var at, id int64
	switch err := t.queryRow(ctx, q, args...).Scan(&at, &id); {
	case errors.Is(err, sql.ErrNoRows):
		return page, nil // the range ended within the window
	case err != nil:
		return nil, err
	}
	page.Next, page.Partial = &Cursor{fromMicros(at), id}, true
	return page, nil
}

func anyInts(ids []int64) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// MaxChildren bounds the steps WorkflowChildren returns; templates expand
// into far fewer.
const MaxChildren = 1000

// WorkflowChildren returns the requests of a workflow in creation order, if
// the viewer sees the workflow (else ErrNotFound); at most MaxChildren.
func (s *SQL) WorkflowChildren(ctx context.Context, parentID int64, v *Viewer) ([]model.WorkRequest, error) {
	out := []model.WorkRequest{}
	err := s.readTx(ctx, func(t *tx) error {
		if _, err := s.workRequests().get(ctx, t, parentID, v, false); err != nil {
			return err
		}
		tb := s.workRequests()
		return t.each(ctx, tb.selectSQL()+" WHERE parent_id = $1 ORDER BY id LIMIT "+strconv.Itoa(MaxChildren),
			[]any{parentID}, func(r *sql.Rows) error {
				wr, err := tb.def.scan(r)
				if err == nil {
					out = append(out, *wr)
				}
				return err
			})
	})
	return out, err
}

// RunningOn returns, per worker, the request it is running, among those
// the viewer sees: a busy worker whose request is hidden from the viewer
// is simply absent.
func (s *SQL) RunningOn(ctx context.Context, workerIDs []int64, v *Viewer) (map[int64]model.WorkRequest, error) {
	out := map[int64]model.WorkRequest{}
	if len(workerIDs) == 0 {
		return out, nil
	}
	tb := s.workRequests()
	var w where
	w.add("status = 'running'")
	w.add("worker_id IN ("+placeholders(len(workerIDs))+")", anyInts(workerIDs)...)
	tb.visibility(&w, v)
	err := s.readTx(ctx, func(t *tx) error {
		return t.each(ctx, tb.selectSQL()+w.sql(), w.args, func(r *sql.Rows) error {
			wr, err := tb.def.scan(r)
			if err == nil && wr.WorkerID != nil {
				out[*wr.WorkerID] = *wr
			}
			return err
		})
	})
	return out, err
}

// WorkerFilter selects a page of workers for the dashboard, by id.
type WorkerFilter struct {
	// Connected, when set, keeps connected (true) or disconnected
	// (false) workers.
	Connected *bool
	PoolID    int64
	After     int64
	Limit     int
}

// BrowseWorkers returns one page of workers, ordered by id, with Busy set.
// Workers belong to no workspace: who may list them at all is the
// caller's decision (the API's: users).
func (s *SQL) BrowseWorkers(ctx context.Context, f WorkerFilter) ([]model.Worker, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultPageSize
	}
	limit = min(limit, MaxPageSize)
	var w where
	if f.After > 0 {
		w.add("id > ?", f.After)
	}
	if f.Connected != nil {
		if *f.Connected {
			w.add("connected_at IS NOT NULL")
		} else {
			w.add("connected_at IS NULL")
		}
	}
	if f.PoolID != 0 {
		w.add("worker_pool_id = ?", f.PoolID)
	}
	tb := s.workers()
	out := []model.Worker{}
	err := s.readTx(ctx, func(t *tx) error {
		if err := t.each(ctx, tb.selectSQL()+w.sql()+" ORDER BY id LIMIT "+strconv.Itoa(limit), w.args, func(r *sql.Rows) error {
			wk, err := tb.def.scan(r)
			if err == nil {
				out = append(out, *wk)
			}
			return err
		}); err != nil {
			return err
		}
		if len(out) == 0 {
			return nil
		}
		ids := make([]int64, len(out))
		for i := range out {
			ids[i] = out[i].ID
		}
		busy := map[int64]bool{}
		var bw where
		bw.add("status = 'running'")
		bw.add("worker_id IN ("+placeholders(len(ids))+")", anyInts(ids)...)
		if err := t.each(ctx, "SELECT DISTINCT worker_id FROM work_requests"+bw.sql(), bw.args, func(r *sql.Rows) error {
			var id int64
			err := r.Scan(&id)
			busy[id] = true
			return err
		}); err != nil {
			return err
		}
		for i := range out {
			out[i].Busy = busy[out[i].ID]
		}
		return nil
	})
	return out, err
}

// WorkerNames maps worker ids to names, for lists that show who ran what.
// Workers belong to no workspace: whether to show their names is the
// caller's decision (the API's: to users).
func (s *SQL) WorkerNames(ctx context.Context, ids []int64) (map[int64]string, error) {
	out := map[int64]string{}
	if len(ids) == 0 {
		return out, nil
	}
	var w where
	w.add("id IN ("+placeholders(len(ids))+")", anyInts(ids)...)
	err := s.readTx(ctx, func(t *tx) error {
		return t.each(ctx, "SELECT id, name FROM workers"+w.sql(), w.args, func(r *sql.Rows) error {
			var id int64
			var name string
			err := r.Scan(&id, &name)
			out[id] = name
			return err
		})
	})
	return out, err
}

// placeholders is n positional parameters for an IN list, "?, ?, ?" (the
// statement's rebinding numbers them for PostgreSQL).
func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?, ", n), ", ") }
