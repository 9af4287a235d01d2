package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/model"
)

// Claiming and completing: the two transactions every work request goes
// through, written for the fewest round trips (the generic Table update
// reads a row twice, its dependencies twice, and looks up the worker, its
// busy flag and the workspace's scope one query at a time). They keep the
// same guarantees: one transaction, row locks, running totals in the same
// commit, hooks after it.

// ErrNoWork is returned by ClaimWorkRequest when nothing pending matches.
var ErrNoWork = errors.New("no matching work request")

// ErrWorkerBusy is returned by ClaimWorkRequest for a worker that already
// runs as many requests as its capacity (model.WorkerMetadata.Capacity): a
// runner that asks for more than that holds a stale assignment.
var ErrWorkerBusy = &FieldError{Field: "worker", Message: "the worker already runs as many work requests as it may at once", Kind: Conflict}

// ClaimWorkRequest hands the oldest, highest-priority pending request that
// the worker can run to it, in one transaction. On PostgreSQL the candidate
// rows are locked with FOR UPDATE SKIP LOCKED, so several server processes
// never hand out the same request; SQLite serialises writers.
//
// Matching (docs/architecture.md#matching): the task type's worker type is the worker's type;
// for Worker tasks host_architecture is one of the worker's architectures
// and the backend is "auto" or one the worker has. A disabled worker gets
// nothing; one that runs as many requests as its capacity (the runner's
// concurrent setting, model.WorkerMetadata.Capacity) gets ErrWorkerBusy.
// A worker never holds more than its capacity, whoever claims for it.
//
// With CompleteWorkRequest it is one of the two transactions every
// request goes through, so it takes two statements besides the
// transaction's own and the running totals': lock the worker and count
// what it runs; find, lock and update the request, returning everything
// the caller and the running totals need.
//
// The count that decides — the capacity check and the worker's busy
// label — is read by the second statement, after the worker's lock is
// held. Every transaction that starts or ends a request on a worker
// holds that lock (claims, completions, requeues, aborts), so on
// PostgreSQL, whose READ COMMITTED snapshot is taken per statement, the
// count includes all of them; the first statement's count, whose snapshot
// may predate a wait for the lock, only spares a full worker the second.
func (s *SQL) ClaimWorkRequest(ctx context.Context, workerID int64) (*model.WorkRequest, error) {
	var out *model.WorkRequest
	err := s.inTx(ctx, func(t *tx) error {
		var err error
		out, err = s.claim(ctx, t, workerID)
		return err
	})
	return out, err
}

// CompleteAndClaim records the end of a running request, like
// CompleteWorkRequest, and claims the next request for the same worker,
// like ClaimWorkRequest, in one transaction: what a runner that wants
// more work asks for with its result. next is nil when nothing matches
// (or the worker may not have more: disabled); the completion stands
// either way. An error means neither happened.
func (s *SQL) CompleteAndClaim(ctx context.Context, id, workerID int64, c Completion) (done, next *model.WorkRequest, err error) {
	err = s.inTx(ctx, func(t *tx) error {
		done, next = nil, nil
		if c.Result == model.ResultNone || !c.Result.Valid() {
			return invalid("result", "%q is not a result: use success, failure, error or skipped", c.Result)
		}
		wr, w, running, err := s.completeHeld(ctx, t, id, workerID, c)
		if err != nil {
			return err
		}
		done = wr
		next, err = s.claimFor(ctx, t, w, running)
		var fe *FieldError
		if errors.Is(err, ErrNoWork) || errors.As(err, &fe) {
			next, err = nil, nil
		}
		return err
	})
	return done, next, err
}

func (s *SQL) claim(ctx context.Context, t *tx, workerID int64) (*model.WorkRequest, error) {
	w, running, err := s.lockWorker(ctx, t, workerID)
	if err != nil {
		return nil, err
	}
	return s.claimFor(ctx, t, w, running)
}

// claimFor claims for worker w, locked by this transaction and running
// that many requests as far as the statement that locked it could see.
func (s *SQL) claimFor(ctx context.Context, t *tx, w *model.Worker, running int) (*model.WorkRequest, error) {
	if !w.Enabled {
		return nil, conflict("worker", "worker %q is not enabled yet: an admin must enable it", w.Name)
	}
	capacity := w.Metadata.Capacity()
	if running >= capacity {
		return nil, ErrWorkerBusy
	}
	q, args := s.nextRequestQuery(w)
	if q == "" {
		return nil, ErrNoWork
	}
	// find, lock and take it in one statement (the queue's classic
	// UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)), as long as
	// the worker has room, and count what else it runs
	n := len(args)
	var others int
	wr, err := s.requestRowWith(ctx, t, fmt.Sprintf("UPDATE work_requests SET status = 'running', worker_id = $%d, started_at = $%d WHERE id = (%s) AND status = 'pending' AND %s < $%d RETURNING ",
		n+1, n+2, q, runningOf(fmt.Sprintf("$%d", n+1)), n+3), ", "+othersRunning, []any{&others}, append(args, w.ID, toMicros(s.now()), capacity)...)
	if errors.Is(err, errNoRows) {
		return nil, ErrNoWork
	}
	if err != nil {
		return nil, err
	}
	was := *wr
	was.Status, was.WorkerID, was.StartedAt = model.StatusPending, nil, nil
	if err := s.moved(ctx, t, &was, wr); err != nil {
		return nil, err
	}
	return wr, t.busy(ctx, w, others, others+1)
}

// nextRequestQuery is the query that finds (and, on PostgreSQL, locks
// with SKIP LOCKED) the pending request worker w should get next: the
// first, in queue order, of the first rows of every index range it may
// take. Each range is one exact key of a partial index over pending
// requests — (host_architecture, backend) for Worker tasks, the task type
// otherwise — read in queue order, so a claim reads one row per range
// however many requests wait for architectures or backends w lacks. The
// query is "" when w can run nothing.
//
// On PostgreSQL every range locks its first free row; the rows the worker
// does not get stay locked until the claim commits, and other claimers
// skip them meanwhile, which costs at most a brief reordering.
func (s *SQL) nextRequestQuery(w *model.Worker) (string, []any) {
	var conds []string
	var args []any
	if w.WorkerType == model.WorkerExternal {
		value := func(v string) string {
			if safeLiteral.MatchString(v) {
				return "'" + v + "'"
			}
			args = append(args, v)
			return "$" + strconv.Itoa(len(args))
		}
		backends := uniq(append([]string{"auto"}, w.Metadata.Backends...))
		for _, arch := range uniq(w.Metadata.Architectures) {
			for _, b := range backends {
				conds = append(conds, "task_type = 'Worker' AND host_architecture = "+value(arch)+" AND backend = "+value(b))
			}
		}
	} else {
		for _, tt := range model.TaskTypes {
			if model.WorkerTypeFor(tt) == w.WorkerType {
				// a constant of the model, never input: the literal lets
				// the planner use the partial index
				conds = append(conds, "task_type <> 'Worker' AND task_type = '"+string(tt)+"'")
			}
		}
	}
	lock := ""
	if s.dialect == Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	const order = " ORDER BY priority DESC, created_at, id LIMIT 1"
	switch len(conds) {
	case 0:
		return "", nil
	case 1:
		return "SELECT id FROM work_requests WHERE status = 'pending' AND " + conds[0] + order + lock, args
	}
	arms := make([]string, len(conds))
	for i, c := range conds {
		arms[i] = fmt.Sprintf("SELECT * FROM (SELECT id, priority, created_at FROM work_requests WHERE status = 'pending' AND %s%s%s) AS r%d",
			c, order, lock, i)
	}
	return "SELECT id FROM (" + strings.Join(arms, " UNION ALL ") + ") AS candidates" + order, args
}

// safeLiteral matches the architecture and backend names that claims
// write into their SQL as literals rather than bind as parameters: on
// PostgreSQL a prepared statement's generic plan does not know a
// parameter's value, and for a value as skewed as "the architecture of a
// 200k backlog" it can prefer an index scan that filters instead of the
// exact key. Names are Debian's ([a-z0-9-]) and backends short words, so
// every real one matches; anything else is bound as usual.
var safeLiteral = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

// uniq drops repeated and empty strings, keeping the first occurrence.
func uniq(ss []string) []string {
	seen := make(map[string]bool, len(ss))
	out := ss[:0:0]
	for _, s := range ss {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// runningCount counts the requests the worker of the query runs.
const runningCount = "(SELECT COUNT(*) FROM work_requests r WHERE r.worker_id = workers.id AND r.status = 'running')"

// runningOf counts the requests worker (an expression) runs.
func runningOf(worker string) string {
	return "(SELECT COUNT(*) FROM work_requests r WHERE r.worker_id = " + worker + " AND r.status = 'running')"
}

// othersRunning, in the RETURNING list of a statement that moves one
// request of a worker into or out of running, counts the other requests
// that worker runs. Leaving the moved row out makes it the same on both
// databases: a subquery of PostgreSQL's RETURNING sees the table as it
// was before the statement, SQLite's as it is after.
const othersRunning = "(SELECT COUNT(*) FROM work_requests r WHERE r.worker_id = work_requests.worker_id AND r.status = 'running' AND r.id <> work_requests.id)"

// lockWorker reads worker id, locked on PostgreSQL until the transaction
// ends, with the number of requests it runs: one round trip. The count
// comes from the statement's snapshot, which on PostgreSQL may predate the
// wait for the lock: it may still include a request a transaction that
// held the lock has finished meanwhile (see ClaimWorkRequest).
func (s *SQL) lockWorker(ctx context.Context, t *tx, id int64) (*model.Worker, int, error) {
	var running int
	w, err := scanWorker(t.queryRow(ctx, "SELECT "+qualified("workers", s.defs.workers.columns)+", "+runningCount+
		" FROM workers WHERE id = $1"+t.forUpdate(), id), &running)
	if errors.Is(err, errNoRows) {
		return nil, 0, fmt.Errorf("worker %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read worker %d: %w", id, err)
	}
	w.Busy = running > 0
	return w, running, nil
}

// lockHeld reads request id and worker workerID in one statement, both
// locked on PostgreSQL (request first: the rows of one statement are
// locked in the order of its FROM list), with what requestRow reads of
// the request. What the worker runs is counted by the statement that
// completes the request, once the lock is held (see ClaimWorkRequest).
func (s *SQL) lockHeld(ctx context.Context, t *tx, id, workerID int64) (*model.WorkRequest, *model.Worker, error) {
	var extras requestExtras
	var w workerRow
	q := "SELECT " + s.requestCols() + ", " + qualified("workers", s.defs.workers.columns) +
		" FROM work_requests, workers WHERE work_requests.id = $1 AND workers.id = $2" + t.forUpdate()
	wr, err := scanWorkRequestWith(t.queryRow(ctx, q, id, workerID), append(extras.dest(), w.dest()...)...)
	if errors.Is(err, errNoRows) {
		if ok, err := t.exists(ctx, "SELECT 1 FROM work_requests WHERE id = $1", id); err != nil || !ok {
			if err == nil {
				err = fmt.Errorf("work request %d: %w", id, ErrNotFound)
			}
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("worker %d: %w", workerID, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read work request %d: %w", id, err)
	}
	if err := extras.apply(t, wr); err != nil {
		return nil, nil, err
	}
	wk, err := w.worker()
	if err != nil {
		return nil, nil, err
	}
	return wr, wk, nil
}

// qualified lists columns, id first, prefixed with their table.
func qualified(table string, cols []string) string {
	var b strings.Builder
	b.WriteString(table + ".id")
	for _, c := range cols {
		b.WriteString(", " + table + "." + c)
	}
	return b.String()
}

// requestCols is the select list of a work request (table work_requests)
// followed by its scope and its dependencies (requestExtras).
func (s *SQL) requestCols() string {
	deps := "string_agg(CAST(d.depends_on_id AS TEXT), ',')"
	if s.dialect == SQLite {
		deps = "group_concat(d.depends_on_id)"
	}
	return qualified("work_requests", s.defs.workRequests.columns) +
		", (SELECT scope_id FROM workspaces ws WHERE ws.id = work_requests.workspace_id)" +
		", (SELECT " + deps + " FROM work_request_dependencies d WHERE d.work_request_id = work_requests.id)"
}

// requestExtras receives what requestCols reads after the columns.
type requestExtras struct {
	scope int64
	deps  sql.NullString
}

func (e *requestExtras) dest() []any { return []any{&e.scope, &e.deps} }

// apply sets wr's dependencies and caches its workspace's scope in t for
// the running totals.
func (e *requestExtras) apply(t *tx, wr *model.WorkRequest) error {
	wr.Dependencies = []int64{}
	if e.deps.Valid {
		for _, f := range strings.Split(e.deps.String, ",") {
			d, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return fmt.Errorf("work request %d dependencies: %w", wr.ID, err)
			}
			wr.Dependencies = append(wr.Dependencies, d)
		}
		slices.Sort(wr.Dependencies)
	}
	if t.scopes == nil {
		t.scopes = map[int64]int64{}
	}
	t.scopes[wr.WorkspaceID] = e.scope
	return nil
}

// requestRow runs a statement that ends in RETURNING on one work request
// and reads the request with requestCols: one round trip. It returns
// errNoRows when the statement changed nothing.
func (s *SQL) requestRow(ctx context.Context, t *tx, stmt string, args ...any) (*model.WorkRequest, error) {
	return s.requestRowWith(ctx, t, stmt, "", nil, args...)
}

// requestRowWith is requestRow for a statement whose RETURNING list goes
// on after requestCols with the columns of more (", …"), read into dest.
func (s *SQL) requestRowWith(ctx context.Context, t *tx, stmt, more string, dest []any, args ...any) (*model.WorkRequest, error) {
	var extras requestExtras
	wr, err := scanWorkRequestWith(t.queryRow(ctx, stmt+s.requestCols()+more, args...), append(extras.dest(), dest...)...)
	if err != nil {
		return nil, err
	}
	return wr, extras.apply(t, wr)
}

// moved records what a lifecycle step did to a request besides writing
// its row: the running totals leave the old labels for the new ones, and
// the hooks hear about it after commit.
func (s *SQL) moved(ctx context.Context, t *tx, old, wr *model.WorkRequest) error {
	wrs := s.workRequests()
	if err := wrs.adjust(ctx, t, old, -1); err != nil {
		return err
	}
	if err := wrs.adjust(ctx, t, wr, +1); err != nil {
		return err
	}
	t.transitioned(old, wr)
	return nil
}

// busy moves worker w's busy label when the number of requests it runs
// goes from before to after.
func (t *tx) busy(ctx context.Context, w *model.Worker, before, after int) error {
	if (before > 0) == (after > 0) {
		return nil
	}
	wk := *w
	wk.Busy = before > 0
	if err := t.s.workers().adjust(ctx, t, &wk, -1); err != nil {
		return err
	}
	wk.Busy = after > 0
	return t.s.workers().adjust(ctx, t, &wk, +1)
}

// completeHeld completes request id that worker workerID reports on: the
// hot path of CompleteWorkRequest (complete handles the others), in two
// statements: lock the request and the worker (lockHeld), update the
// request, counting what else the worker runs (and settle its dependents,
// if it has any). Like every path that locks a request and its worker, it
// locks the request first; claims lock the worker first, but never wait
// for a request's lock (SKIP LOCKED), so the two cannot deadlock.
//
// It returns the completed request and the worker, locked, with the
// number of requests it still runs.
func (s *SQL) completeHeld(ctx context.Context, t *tx, id, workerID int64, c Completion) (*model.WorkRequest, *model.Worker, int, error) {
	old, w, err := s.lockHeld(ctx, t, id, workerID)
	if err != nil {
		return nil, nil, 0, err
	}
	if old.Status != model.StatusRunning {
		return nil, nil, 0, conflict("status", "work request %d is %s, not running", old.ID, old.Status)
	}
	if old.WorkerID == nil || *old.WorkerID != workerID {
		return nil, nil, 0, conflict("worker", "work request %d is not assigned to this worker any more", old.ID)
	}
	wr := *old
	finish(&wr, c, s.now())
	var stats, output any
	if wr.Statistics != nil {
		b, _ := json.Marshal(wr.Statistics)
		stats = string(b)
	}
	if len(wr.Output) > 0 {
		if err := checkText("output", jsonDoc(wr.Output)); err != nil {
			return nil, nil, 0, err
		}
		output = string(wr.Output)
	}
	// The update also says whether other requests depend on this one, and
	// how many other requests the worker runs (the worker_id the count
	// follows is the worker's, which the request keeps once completed).
	// It must be this statement, not lockHeld, that looks: a dependent
	// whose submission held the row (submit reads dependencies FOR SHARE),
	// or a claim or completion of the same worker that held its lock, made
	// lockHeld wait, and is visible only to statements that start after
	// the wait.
	var dependents bool
	var others int
	if err := t.queryRow(ctx, `UPDATE work_requests SET status = $1, result = $2, started_at = $3, completed_at = $4, statistics = $5,
		execution_time = $6, output = $7 WHERE id = $8
		RETURNING EXISTS (SELECT 1 FROM work_request_dependencies d WHERE d.depends_on_id = $8), `+othersRunning,
		string(wr.Status), string(wr.Result), nullMicros(wr.StartedAt), nullMicros(wr.CompletedAt), stats,
		nullInt(wr.ExecutionTime), output, wr.ID).Scan(&dependents, &others); err != nil {
		return nil, nil, 0, fmt.Errorf("complete work request %d: %w", wr.ID, err)
	}
	if err := s.moved(ctx, t, old, &wr); err != nil {
		return nil, nil, 0, err
	}
	if err := t.busy(ctx, w, others+1, others); err != nil {
		return nil, nil, 0, err
	}
	w.Busy = others > 0
	if dependents {
		if err := s.settleDependents(ctx, t, &wr); err != nil {
			return nil, nil, 0, err
		}
	}
	return &wr, w, others, s.settleParent(ctx, t, &wr)
}

// lockWorkerRow locks worker id's row on PostgreSQL until the transaction
// ends, so that what the worker runs can be counted exactly by the
// statements after it (SQLite's transactions hold the write lock already).
func (t *tx) lockWorkerRow(ctx context.Context, id int64) error {
	if t.s.dialect != Postgres {
		return nil
	}
	var one int
	err := t.queryRow(ctx, "SELECT 1 FROM workers WHERE id = $1 FOR UPDATE", id).Scan(&one)
	if errors.Is(err, errNoRows) {
		return fmt.Errorf("worker %d: %w", id, ErrNotFound)
	}
	return err
}
