package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

func (s *SQL) workRequests() *table[model.WorkRequest] {
	return &table[model.WorkRequest]{s, s.defs.workRequests}
}

// WorkRequests is the work request table. Create requests with
// SubmitWorkRequest and move them with the lifecycle methods, which keep
// dependencies, workers and running totals consistent; Update is for fields
// outside the lifecycle (priority).
func (s *SQL) WorkRequests() Table[model.WorkRequest] { return s.workRequests() }

// SubmitWorkRequest creates wr: blocked while a dependency has not completed
// successfully, pending otherwise. Workflow roots are created running: their
// children do the work.
func (s *SQL) SubmitWorkRequest(ctx context.Context, wr *model.WorkRequest) error {
	return s.inTx(ctx, func(t *tx) error { return s.submit(ctx, t, wr) })
}

func (s *SQL) submit(ctx context.Context, t *tx, wr *model.WorkRequest) error {
	wr.Result, wr.WorkerID, wr.StartedAt, wr.CompletedAt, wr.Statistics, wr.ExecutionTime, wr.DueAt = "", nil, nil, nil, nil, nil, nil
	wr.Status = model.StatusPending
	if wr.TaskType == model.TaskWorkflow {
		now := fromMicros(toMicros(s.now()))
		wr.Status, wr.StartedAt = model.StatusRunning, &now
	}
	// A dependency's row is read locked (PostgreSQL: FOR SHARE), so that a
	// completion running meanwhile either commits first and is seen here,
	// or waits for this insert and then finds the new dependent when it
	// settles its dependents; unlocked, both could miss each other and
	// leave the request blocked behind one that finished. SQLite has one
	// writer.
	share := ""
	if s.dialect == Postgres {
		share = " FOR SHARE"
	}
	for _, d := range wr.Dependencies {
		var status, result string
		err := t.queryRow(ctx, "SELECT status, result FROM work_requests WHERE id = $1"+share, d).Scan(&status, &result)
		if err != nil {
			break // checkWorkRequest names the missing dependency
		}
		if status != string(model.StatusCompleted) || result != string(model.ResultSuccess) {
			wr.Status = model.StatusBlocked
		}
	}
	if err := s.workRequests().create(ctx, t, wr); err != nil {
		return err
	}
	if wr.TaskType == model.TaskWorkflow && wr.ParentID == nil && wr.CreatedBy != nil {
		scope, err := t.workspaceScope(ctx, "workspace", wr.WorkspaceID)
		if err != nil {
			return err
		}
		return t.recordWorkflowActivity(ctx, *wr.CreatedBy, scope, toMicros(wr.CreatedAt))
	}
	return nil
}

// Completion is what a worker reports at the end of a task.
type Completion struct {
	Result     model.Result
	Statistics *model.RuntimeStatistics
	Output     json.RawMessage
}

// CompleteWorkRequest records the end of a running request. workerID, when
// non-zero, must be the worker that holds it: a worker that lost its request
// to a requeue cannot complete it any more. Dependents are unblocked (or
// aborted when this one did not succeed) in the same transaction.
func (s *SQL) CompleteWorkRequest(ctx context.Context, id, workerID int64, c Completion) (*model.WorkRequest, error) {
	var out *model.WorkRequest
	err := s.inTx(ctx, func(t *tx) error {
		var err error
		out, err = s.complete(ctx, t, id, workerID, c)
		return err
	})
	return out, err
}

func (s *SQL) complete(ctx context.Context, t *tx, id, workerID int64, c Completion) (*model.WorkRequest, error) {
	if c.Result == model.ResultNone || !c.Result.Valid() {
		return nil, invalid("result", "%q is not a result: use success, failure, error or skipped", c.Result)
	}
	if workerID != 0 {
		wr, _, _, err := s.completeHeld(ctx, t, id, workerID, c)
		return wr, err
	}
	wr, err := s.workRequests().update(ctx, t, id, nil, func(wr *model.WorkRequest) error {
		if wr.Status != model.StatusRunning && wr.Status != model.StatusPending {
			return conflict("status", "work request %d is %s, not running", wr.ID, wr.Status)
		}
		finish(wr, c, s.now())
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.settleDependents(ctx, t, wr); err != nil {
		return nil, err
	}
	return wr, s.settleParent(ctx, t, wr)
}

// finish records completion c on wr at now.
func finish(wr *model.WorkRequest, c Completion, now time.Time) {
	at := fromMicros(toMicros(now))
	if wr.StartedAt == nil {
		wr.StartedAt = &at
	}
	wr.Status, wr.Result, wr.CompletedAt, wr.Statistics = model.StatusCompleted, c.Result, &at, c.Statistics
	if us, ok := executionTime(wr); ok {
		wr.ExecutionTime = &us
	}
	if len(c.Output) > 0 {
		wr.Output = c.Output
	}
}

// settleParent completes a workflow once its last child has finished:
// success when every child succeeded (or was skipped), failure otherwise.
func (s *SQL) settleParent(ctx context.Context, t *tx, child *model.WorkRequest) error {
	if child.ParentID == nil {
		return nil
	}
	// The parent's lock orders the children that end together, on this
	// replica or another: under READ COMMITTED each would otherwise read
	// its siblings before the others commit, see one still running, and
	// leave the workflow running forever. The one that waited reads them
	// afterwards, each statement with a fresh snapshot.
	var typ, status string
	if err := t.queryRow(ctx, "SELECT task_type, status FROM work_requests WHERE id = $1"+t.forUpdate(), *child.ParentID).Scan(&typ, &status); err != nil {
		return err
	}
	if typ != string(model.TaskWorkflow) || status != string(model.StatusRunning) {
		return nil
	}
	unfinished, err := t.exists(ctx, "SELECT 1 FROM work_requests WHERE parent_id = $1 AND status NOT IN ('completed', 'aborted') LIMIT 1", *child.ParentID)
	if err != nil || unfinished {
		return err
	}
	failed, err := t.exists(ctx, "SELECT 1 FROM work_requests WHERE parent_id = $1 AND NOT (status = 'completed' AND result IN ('success', 'skipped')) LIMIT 1", *child.ParentID)
	if err != nil {
		return err
	}
	result := model.ResultSuccess
	if failed {
		result = model.ResultFailure
	}
	_, err = s.complete(ctx, t, *child.ParentID, 0, Completion{Result: result})
	return err
}

// settleDependents moves the blocked dependents of a finished request:
// pending once all their dependencies succeeded, aborted as soon as one did
// not.
func (s *SQL) settleDependents(ctx context.Context, t *tx, done *model.WorkRequest) error {
	// The dependents' locks order the dependencies that end together,
	// as the parent's lock does in settleParent: the last one to commit
	// sees all the others done.
	lock := ""
	if s.dialect == Postgres {
		lock = " FOR UPDATE OF w"
	}
	ids, err := t.ids(ctx, `SELECT work_request_id FROM work_request_dependencies d JOIN work_requests w ON w.id = d.work_request_id
		WHERE d.depends_on_id = $1 AND w.status = 'blocked' ORDER BY work_request_id`+lock, done.ID)
	if err != nil {
		return err
	}
	succeeded := done.Status == model.StatusCompleted && done.Result == model.ResultSuccess
	for _, id := range ids {
		if !succeeded {
			if _, err := s.abort(ctx, t, id, fmt.Sprintf("dependency %d ended %s/%s", done.ID, done.Status, done.Result)); err != nil {
				return err
			}
			continue
		}
		waiting, err := t.exists(ctx, `SELECT 1 FROM work_request_dependencies d JOIN work_requests w ON w.id = d.depends_on_id
			WHERE d.work_request_id = $1 AND NOT (w.status = 'completed' AND w.result = 'success') LIMIT 1`, id)
		if err != nil {
			return err
		}
		if waiting {
			continue
		}
		if _, err := s.workRequests().update(ctx, t, id, nil, func(wr *model.WorkRequest) error {
			wr.Status = model.StatusPending
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// AbortWorkRequest aborts a request that has not finished, with its
// children and the requests that depend on it.
func (s *SQL) AbortWorkRequest(ctx context.Context, id int64, reason string, v *Viewer) (*model.WorkRequest, error) {
	var out *model.WorkRequest
	err := s.inTx(ctx, func(t *tx) error {
		if _, err := s.workRequests().get(ctx, t, id, v, true); err != nil {
			return err
		}
		var err error
		out, err = s.abort(ctx, t, id, reason)
		return err
	})
	return out, err
}

func (s *SQL) abort(ctx context.Context, t *tx, id int64, reason string) (*model.WorkRequest, error) {
	wr, err := s.workRequests().update(ctx, t, id, nil, func(wr *model.WorkRequest) error {
		if wr.Status.Finished() {
			return conflict("status", "work request %d is already %s", wr.ID, wr.Status)
		}
		now := fromMicros(toMicros(s.now()))
		wr.Status, wr.CompletedAt = model.StatusAborted, &now
		if reason != "" {
			b, _ := json.Marshal(map[string]string{"error": reason})
			wr.Output = b
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// children of a workflow
	children, err := t.ids(ctx, "SELECT id FROM work_requests WHERE parent_id = $1 AND status IN ('pending', 'running', 'blocked') ORDER BY id", id)
	if err != nil {
		return nil, err
	}
	for _, c := range children {
		// a sibling's abort may have aborted c already, as its dependent
		var status string
		if err := t.queryRow(ctx, "SELECT status FROM work_requests WHERE id = $1", c).Scan(&status); err != nil {
			return nil, err
		}
		if model.Status(status).Finished() {
			continue
		}
		if _, err := s.abort(ctx, t, c, fmt.Sprintf("parent %d aborted", id)); err != nil {
			return nil, err
		}
	}
	if err := s.settleDependents(ctx, t, wr); err != nil {
		return nil, err
	}
	return wr, s.settleParent(ctx, t, wr)
}

// RetryWorkRequest puts a finished request that did not succeed back in the
// queue (or blocked, if its dependencies are not done), counting a retry.
// Inside a running workflow, the steps that were aborted because it failed
// are retried with it (retryDependents).
func (s *SQL) RetryWorkRequest(ctx context.Context, id int64, v *Viewer) (*model.WorkRequest, error) {
	var out *model.WorkRequest
	err := s.inTx(ctx, func(t *tx) error {
		cur, err := s.workRequests().get(ctx, t, id, v, true)
		if err != nil {
			return err
		}
		if !cur.Status.Finished() || cur.Result == model.ResultSuccess {
			return conflict("status", "only failed or aborted work requests can be retried; %d is %s %s", id, cur.Status, cur.Result)
		}
		if cur.TaskType == model.TaskWorkflow {
			// nothing claims a workflow root: its children do the work
			return conflict("task_type", "work request %d is a workflow: retry its failed steps, or start the workflow again", id)
		}
		blocked, err := t.exists(ctx, `SELECT 1 FROM work_request_dependencies d JOIN work_requests w ON w.id = d.depends_on_id
			WHERE d.work_request_id = $1 AND NOT (w.status = 'completed' AND w.result = 'success') LIMIT 1`, id)
		if err != nil {
			return err
		}
		out, err = s.workRequests().update(ctx, t, id, nil, func(wr *model.WorkRequest) error {
			wr.Status = model.StatusPending
			if blocked {
				wr.Status = model.StatusBlocked
			}
			wr.Result, wr.WorkerID, wr.StartedAt, wr.CompletedAt, wr.Statistics, wr.Output, wr.ExecutionTime, wr.DueAt = "", nil, nil, nil, nil, nil, nil, nil
			wr.Retries++
			return nil
		})
		if err != nil {
			return err
		}
		if err := s.reopenWorkflow(ctx, t, out.ParentID); err != nil {
			return err
		}
		return s.retryDependents(ctx, t, out)
	})
	return out, err
}

// reopenWorkflow makes the finished workflow id (and the finished
// workflows above it) running again, because one of its steps is retried:
// its result is decided again by settleParent when its steps have all
// finished, instead of staying the failure the retried step caused. The
// workflow counts it as one more retry of its own.
func (s *SQL) reopenWorkflow(ctx context.Context, t *tx, id *int64) error {
	for id != nil {
		var typ, status string
		// locked, as settleParent does: two steps retried together
		// reopen it once
		if err := t.queryRow(ctx, "SELECT task_type, status FROM work_requests WHERE id = $1"+t.forUpdate(), *id).Scan(&typ, &status); err != nil {
			return err
		}
		if typ != string(model.TaskWorkflow) || !model.Status(status).Finished() {
			return nil
		}
		wf, err := s.workRequests().update(ctx, t, *id, nil, func(wr *model.WorkRequest) error {
			wr.Status, wr.Result, wr.CompletedAt, wr.ExecutionTime, wr.Output = model.StatusRunning, "", nil, nil, nil
			wr.Retries++
			return nil
		})
		if err != nil {
			return err
		}
		id = wf.ParentID
	}
	return nil
}

// errNotHeld is requeue's answer when the request, once locked, is no
// longer running on the worker the caller read it from: another
// transaction (maybe another replica's) requeued, completed or aborted it
// first, and it may already run elsewhere.
var errNotHeld = errors.New("not running on this worker")

// requeue gives a request that worker holder was running back to the
// queue, or ends it with an error once it has used its retries. It reads
// the request under its lock and returns errNotHeld, changing nothing,
// when holder no longer runs it: callers find requests with reads that
// do not lock, and a requeue must happen once, not once per replica that
// noticed.
func (s *SQL) requeue(ctx context.Context, t *tx, id, holder int64, why string) (*model.WorkRequest, error) {
	cur, err := s.workRequests().get(ctx, t, id, nil, true)
	if err != nil {
		return nil, err
	}
	if cur.Status != model.StatusRunning || cur.WorkerID == nil || *cur.WorkerID != holder {
		return nil, errNotHeld
	}
	if cur.Retries >= cur.MaxRetries {
		b, _ := json.Marshal(map[string]string{"error": why + fmt.Sprintf("; gave up after %d retries", cur.Retries)})
		return s.complete(ctx, t, id, 0, Completion{Result: model.ResultError, Output: b})
	}
	return s.workRequests().update(ctx, t, id, nil, func(wr *model.WorkRequest) error {
		wr.Status, wr.WorkerID, wr.StartedAt, wr.DueAt = model.StatusPending, nil, nil, nil
		wr.Retries++
		return nil
	})
}

// RequeueWorkRequest gives a running request back to the queue on behalf
// of the worker that holds it (a runner shutting down before the task
// finished), counting a retry like any other interrupted run; after
// max_retries it ends with an error instead. workerID must hold it.
func (s *SQL) RequeueWorkRequest(ctx context.Context, id, workerID int64, why string) (*model.WorkRequest, error) {
	var out *model.WorkRequest
	err := s.inTx(ctx, func(t *tx) error {
		var err error
		out, err = s.requeue(ctx, t, id, workerID, why)
		if errors.Is(err, errNotHeld) {
			return conflict("worker", "work request %d is not running on this worker", id)
		}
		return err
	})
	return out, err
}

// ConnectWorker marks a worker connected and records its metadata. A worker
// that connects while the server still thinks it runs something has
// restarted: those requests are requeued, not lost — except the ones the
// worker lists in keep, saying it still runs them across a reconnection.
// The requests it keeps count against the capacity its new metadata
// gives it; a worker that comes back with a smaller capacity than it
// holds runs them out and gets no more until it has room.
func (s *SQL) ConnectWorker(ctx context.Context, id int64, meta model.WorkerMetadata, keep ...int64) (*model.Worker, []int64, error) {
	var out *model.Worker
	var requeued []int64
	kept := map[int64]bool{}
	for _, k := range keep {
		kept[k] = true
	}
	err := s.inTx(ctx, func(t *tx) error {
		stale, err := t.ids(ctx, "SELECT id FROM work_requests WHERE worker_id = $1 AND status = 'running' ORDER BY id"+t.forUpdate(), id)
		if err != nil {
			return err
		}
		requeued = nil
		for _, wr := range stale {
			if kept[wr] {
				continue
			}
			if _, err := s.requeue(ctx, t, wr, id, "worker restarted while running it"); errors.Is(err, errNotHeld) {
				continue // requeued meanwhile by the heartbeat rule
			} else if err != nil {
				return err
			}
			requeued = append(requeued, wr)
		}
		out, err = s.workers().update(ctx, t, id, nil, func(w *model.Worker) error {
			now := fromMicros(toMicros(s.now()))
			w.ConnectedAt, w.LastSeenAt, w.Metadata = &now, &now, meta
			return nil
		})
		return err
	})
	return out, requeued, err
}

// DisconnectWorker marks a worker disconnected. Its running request stays
// assigned until the heartbeat timeout (RequeueLostWork), so a runner that
// reconnects quickly can still report it.
func (s *SQL) DisconnectWorker(ctx context.Context, id int64) error {
	return s.inTx(ctx, func(t *tx) error {
		_, err := s.workers().update(ctx, t, id, nil, func(w *model.Worker) error {
			w.ConnectedAt = nil
			return nil
		})
		return err
	})
}

// TouchWorker records a heartbeat, says whether the worker is still
// marked connected (RequeueLostWork, here or on another replica, may have
// judged it lost meanwhile) and lists the requests it runs, in id order,
// so that its session can tell the runner to stop those it no longer
// holds. It changes no counted label, so it is one statement outside the
// running totals.
func (s *SQL) TouchWorker(ctx context.Context, id int64) (connected bool, running []int64, err error) {
	ids := "string_agg(CAST(r.id AS TEXT), ',')"
	if s.dialect == SQLite {
		ids = "group_concat(r.id)"
	}
	var list sql.NullString
	err = s.db.QueryRowContext(ctx, "UPDATE workers SET last_seen_at = $1 WHERE id = $2 RETURNING connected_at IS NOT NULL, "+
		"(SELECT "+ids+" FROM work_requests r WHERE r.worker_id = $2 AND r.status = 'running')",
		toMicros(s.now()), id).Scan(&connected, &list)
	if errors.Is(err, errNoRows) {
		return false, nil, fmt.Errorf("worker %d: %w", id, ErrNotFound)
	}
	if err != nil || !list.Valid {
		return connected, nil, err
	}
	for _, f := range strings.Split(list.String, ",") {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return connected, nil, fmt.Errorf("worker %d running requests: %w", id, err)
		}
		running = append(running, n)
	}
	slices.Sort(running)
	return connected, running, nil
}

// Revoked is a running request taken from the worker that ran it, which
// must stop it: the attempt is the request's retries while that worker
// ran it, so that the runner that may get it next is not told to stop
// too.
type Revoked struct {
	WorkRequest int64
	Worker      int64
	Attempt     int
}

// RequeueLostWork finds workers whose last heartbeat is older than timeout,
// marks them disconnected and requeues their running requests. It returns
// what it took from whom. Server workers heartbeat too (their scheduler
// touches them), so that the Server tasks of a replica that died go to
// the others.
//
// Every replica applies the rule, often at the same moment. Each request
// goes back once: the running requests of a lost worker are read under
// their locks (a replica that waits for another's then finds them no
// longer running), the requests first and the worker after, the order of
// every path that locks both; and a worker whose heartbeat arrived
// meanwhile keeps what it runs.
func (s *SQL) RequeueLostWork(ctx context.Context, timeout time.Duration) ([]Revoked, error) {
	cutoff := fromMicros(toMicros(s.now().Add(-timeout)))
	var requeued []Revoked
	err := s.inTx(ctx, func(t *tx) error {
		requeued = nil
		lost, err := t.ids(ctx, `SELECT id FROM workers WHERE (last_seen_at IS NULL OR last_seen_at < $1)
			AND (connected_at IS NOT NULL OR id IN (SELECT worker_id FROM work_requests WHERE status = 'running' AND worker_id IS NOT NULL))
			ORDER BY id`, toMicros(cutoff))
		if err != nil {
			return err
		}
		for _, w := range lost {
			// every request of the worker locked before the worker (as
			// each requeue locks it): the order completions lock them in
			wrs, err := t.ids(ctx, "SELECT id FROM work_requests WHERE worker_id = $1 AND status = 'running' ORDER BY id"+t.forUpdate(), w)
			if err != nil {
				return err
			}
			wk, err := s.workers().get(ctx, t, w, nil, true)
			if err != nil {
				return err
			}
			if wk.LastSeenAt != nil && !wk.LastSeenAt.Before(cutoff) {
				continue // it spoke since the first read
			}
			for _, wr := range wrs {
				out, err := s.requeue(ctx, t, wr, w, fmt.Sprintf("worker %d stopped sending heartbeats", w))
				if errors.Is(err, errNotHeld) {
					continue
				} else if err != nil {
					return err
				}
				attempt := out.Retries
				if out.Status == model.StatusPending {
					attempt-- // the requeue counted one more
				}
				requeued = append(requeued, Revoked{WorkRequest: wr, Worker: w, Attempt: attempt})
			}
			if wk.ConnectedAt == nil {
				continue
			}
			if _, err := s.workers().update(ctx, t, w, nil, func(wk *model.Worker) error {
				wk.ConnectedAt = nil
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	return requeued, err
}

// ids runs a query returning one id column.
func (t *tx) ids(ctx context.Context, q string, args ...any) ([]int64, error) {
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// WorkflowStep is one child of a workflow being submitted: a request and
// the indexes of earlier steps it depends on.
type WorkflowStep struct {
	Request *model.WorkRequest
	After   []int
}

// SubmitWorkflow creates a workflow root (running) and all its children in
// one transaction: either the whole workflow exists or none of it. Children
// run in the root's workspace; the root completes when its last child ends
// (settleParent). It records the creator's activity in the scope.
func (s *SQL) SubmitWorkflow(ctx context.Context, root *model.WorkRequest, steps []WorkflowStep) error {
	return s.inTx(ctx, func(t *tx) error {
		root.TaskType = model.TaskWorkflow
		if err := s.submit(ctx, t, root); err != nil {
			return err
		}
		for i, st := range steps {
			wr := st.Request
			wr.ParentID, wr.WorkspaceID, wr.Dependencies = &root.ID, root.WorkspaceID, nil
			if wr.CreatedBy == nil {
				wr.CreatedBy = root.CreatedBy
			}
			for _, j := range st.After {
				if j < 0 || j >= i {
					return invalid("steps", "step %d can only depend on earlier steps, not %d", i, j)
				}
				wr.Dependencies = append(wr.Dependencies, steps[j].Request.ID)
			}
			if err := s.submit(ctx, t, wr); err != nil {
				var fe *FieldError
				if errors.As(err, &fe) {
					return invalid("steps", "step %d (%s): %s", i, wr.StepName, fe.Error())
				}
				return err
			}
		}
		if len(steps) == 0 {
			_, err := s.complete(ctx, t, root.ID, 0, Completion{Result: model.ResultSuccess})
			return err
		}
		return nil
	})
}

// FinishHook is told about every work request that completed or was
// aborted, after the transaction that finished it committed. Hooks run on
// the committing goroutine and must not block.
type FinishHook func(wr model.WorkRequest)

// OnFinish registers a hook; only this process's transitions reach it.
// Register hooks before the store is shared between goroutines.
func (s *SQL) OnFinish(h FinishHook) { s.finishHooks = append(s.finishHooks, h) }

func (s *SQL) finished(wr model.WorkRequest) {
	for _, h := range s.finishHooks {
		h(wr)
	}
}

// PendingHook is told about every work request that became pending —
// submitted, unblocked by its dependencies, retried, requeued — after the
// transaction committed, so that whoever can run it looks at the queue at
// once rather than at its next poll. Hooks run on the committing goroutine
// and must not block.
type PendingHook func(wr model.WorkRequest)

// OnPending registers a hook; only this process's transitions reach it.
// Register hooks before the store is shared between goroutines.
func (s *SQL) OnPending(h PendingHook) { s.pendingHooks = append(s.pendingHooks, h) }
