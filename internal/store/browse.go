package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
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
// range — the workspace's requests, or those of one status or one task
// name — newest first; the filters that no index serves (architecture,
// result, worker, or the second of status and task name) are checked on
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

// browseQuery is the statement of one page of b: with no residual
// filter, the page itself (Limit+1 rows); otherwise the walk of the index
// range, whose third column says whether a row matches the residual
// filters.
// The index is named on SQLite (INDEXED BY), whose planner may otherwise
// prefer the workspace's index with a time range, filtering the status —
// a walk no LIMIT bounds; PostgreSQL's planner picks it by itself.
func browseQuery(d Dialect, b Browse, limit int) (q string, args []any, walk bool, index string) {
	// inner: the conditions of one index range; residual: the others
	var inner where
	var residual []string
	inner.add("workspace_id = ?", b.WorkspaceID)
	status, task := b.Status != "", b.TaskName != ""
	index = "work_requests_browse"
	switch {
	case b.Workflows:
		inner.add("parent_id IS NULL AND task_type = 'Workflow'")
		index = "work_requests_browse_workflows"
	case status:
		inner.add("status = ?", string(b.Status))
		status = false
		index = "work_requests_browse_status"
	case task:
		inner.add("task_name = ?", b.TaskName)
		task = false
		index = "work_requests_browse_task"
	}
	from := " FROM work_requests"
	if d == SQLite {
		from += " INDEXED BY " + index
	}
	if !b.From.IsZero() {
		inner.add("created_at >= ?", toMicros(b.From))
	}
	if !b.To.IsZero() {
		inner.add("created_at < ?", toMicros(b.To))
	}
	if b.Before != nil {
		inner.add("(created_at, id) < (?, ?)", toMicros(b.Before.CreatedAt), b.Before.ID)
	}
	if status {
		residual = append(residual, inner.bind("status = ?", string(b.Status)))
	}
	if task {
		residual = append(residual, inner.bind("task_name = ?", b.TaskName))
	}
	if b.Architecture != "" {
		residual = append(residual, inner.bind("data->>'host_architecture' = ?", b.Architecture))
	}
	if b.Result != "" {
		residual = append(residual, inner.bind("result = ?", string(b.Result)))
	}
	if b.WorkerID != 0 {
		residual = append(residual, inner.bind("worker_id = ?", b.WorkerID))
	}
	const order = " ORDER BY created_at DESC, id DESC"
	if len(residual) == 0 {
		return "SELECT id, " + strings.Join(workRequestDef().columns, ", ") + from + inner.sql() + order +
			" LIMIT " + strconv.Itoa(limit+1), inner.args, false, index
	}
	return "SELECT id, created_at, CASE WHEN " + strings.Join(residual, " AND ") + " THEN 1 ELSE 0 END" + from +
		inner.sql() + order + " LIMIT " + strconv.Itoa(b.scan()), inner.args, true, index
}

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
	if !walk {
		rows, err := t.query(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			wr, err := tb.def.scan(rows)
			if err != nil {
				return nil, err
			}
			page.Items = append(page.Items, *wr)
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if len(page.Items) > limit {
			page.Items = page.Items[:limit]
			last := page.Items[limit-1]
			page.Next = &Cursor{last.CreatedAt, last.ID}
		}
		return page, nil
	}
	// Walk at most b.scan() entries of the range, noting which match;
	// then read the matching rows.
	var hits []int64
	var last Cursor
	scanned := 0
	err := t.each(ctx, q, args, func(r *sql.Rows) error {
		var id, created int64
		var hit int
		if err := r.Scan(&id, &created, &hit); err != nil {
			return err
		}
		scanned++
		last = Cursor{fromMicros(created), id}
		if hit == 1 {
			hits = append(hits, id)
			if len(hits) > limit {
				return errPageFull
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errPageFull) {
		return nil, err
	}
	full := len(hits) > limit
	if full {
		hits = hits[:limit]
	}
	if len(hits) > 0 {
		var w where
		w.add("id IN ("+placeholders(len(hits))+")", anyInts(hits)...)
		if err := t.each(ctx, tb.selectSQL()+w.sql(), w.args, func(r *sql.Rows) error {
			wr, err := tb.def.scan(r)
			if err == nil {
				page.Items = append(page.Items, *wr)
			}
			return err
		}); err != nil {
			return nil, err
		}
		slices.SortFunc(page.Items, func(a, b model.WorkRequest) int {
			if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
				return c
			}
			return int(b.ID - a.ID)
		})
	}
	switch {
	case full:
		l := page.Items[len(page.Items)-1]
		page.Next = &Cursor{l.CreatedAt, l.ID}
	case scanned == b.scan():
		page.Next, page.Partial = &last, true
	}
	return page, nil
}

// errPageFull stops a scan once a page has its rows and one more.
var errPageFull = errors.New("page full")

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

// PoolInstance is a pool worker as the dashboard shows it: its worker,
// and since when its current instance runs (nil when stopped).
type PoolInstance struct {
	Worker    model.Worker
	StartedAt *time.Time
}

// PoolInstances returns the workers of a pool with their instance start,
// by id.
func (s *SQL) PoolInstances(ctx context.Context, poolID int64) ([]PoolInstance, error) {
	tb := s.workers()
	out := []PoolInstance{}
	err := s.readTx(ctx, func(t *tx) error {
		q := "SELECT id, " + strings.Join(tb.def.columns, ", ") + ", instance_started_at FROM workers WHERE worker_pool_id = $1 ORDER BY id LIMIT " +
			strconv.Itoa(MaxPageSize)
		return t.each(ctx, q, []any{poolID}, func(r *sql.Rows) error {
			var started sql.NullInt64
			wk, err := tb.def.scan(trailing{r, &started})
			if err == nil {
				out = append(out, PoolInstance{Worker: *wk, StartedAt: timePtr(started)})
			}
			return err
		})
	})
	return out, err
}

// trailing scans a row whose last columns follow what a table's scan
// reads.
type trailing struct {
	r    scanner
	more any
}

func (s trailing) Scan(dest ...any) error { return s.r.Scan(append(dest, s.more)...) }

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
