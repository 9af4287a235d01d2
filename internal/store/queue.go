package store

import (
	"context"
	"database/sql"
	"strconv"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// The scheduler's reads of the queue. Like claims, each goes through a
// partial index (migration 0003) and reads only the rows it returns,
// however many other requests wait: the Wait scheduler runs them after
// every event that may have made a Wait request pending.

// PendingWork returns up to limit pending requests of task type tt in
// queue order (priority, then age), read through work_requests_pending.
// Worker tasks are not read this way: claims read them per architecture
// and backend.
func (s *SQL) PendingWork(ctx context.Context, tt model.TaskType, limit int) ([]model.WorkRequest, error) {
	if !tt.Valid() || tt == model.TaskWorker {
		return nil, invalid("task_type", "%q: pending work is read by task type for Server, Internal, Workflow, Signing and Wait requests", tt)
	}
	// the task type is a constant of the model (checked above): as a
	// literal it lets the planner use the partial index
	var out []model.WorkRequest
	err := s.readTx(ctx, func(t *tx) error {
		var err error
		out, err = s.queueRead(ctx, t, pendingOf(tt)+" LIMIT "+strconv.Itoa(limit))
		return err
	})
	return out, err
}

// pendingOf selects the pending requests of a task type other than
// Worker, in queue order.
func pendingOf(tt model.TaskType) string {
	return "WHERE status = 'pending' AND task_type <> 'Worker' AND task_type = '" + string(tt) + "' ORDER BY priority DESC, created_at, id"
}

// The Wait scheduler's three reads of running Wait requests.
const (
	runningWaits = "WHERE status = 'running' AND task_type = 'Wait'"
	dueWaits     = runningWaits + " AND due_at <= $1 ORDER BY due_at"
	undueWaits   = runningWaits + " AND due_at IS NULL"
	nextDueWait  = "SELECT MIN(due_at) FROM work_requests " + runningWaits + " AND due_at > $1"
)

// DueWaits returns up to limit running Wait requests that are due at now
// or earlier, earliest first, then those that have no due time (started by
// a kiln from before due_at: the caller computes it); and when the next
// one is due after now (zero when none is). All three reads are ranges of
// work_requests_running_due.
func (s *SQL) DueWaits(ctx context.Context, now time.Time, limit int) ([]model.WorkRequest, time.Time, error) {
	var out []model.WorkRequest
	var next sql.NullInt64
	err := s.readTx(ctx, func(t *tx) error {
		due, err := s.queueRead(ctx, t, dueWaits+" LIMIT "+strconv.Itoa(limit), toMicros(now))
		if err != nil {
			return err
		}
		unscheduled, err := s.queueRead(ctx, t, undueWaits+" LIMIT "+strconv.Itoa(limit-len(due)))
		if err != nil {
			return err
		}
		out = append(due, unscheduled...)
		return t.queryRow(ctx, nextDueWait, toMicros(now)).Scan(&next)
	})
	if err != nil || !next.Valid {
		return out, time.Time{}, err
	}
	return out, fromMicros(next.Int64), nil
}

// queueRead reads, in t, the work requests that a WHERE … ORDER BY …
// LIMIT clause selects, in its order.
func (s *SQL) queueRead(ctx context.Context, t *tx, clause string, args ...any) ([]model.WorkRequest, error) {
	wrs := s.workRequests()
	rows, err := t.query(ctx, wrs.selectSQL()+" "+clause, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []model.WorkRequest
	for rows.Next() {
		wr, err := scanWorkRequest(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *wr)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	for i := range out {
		if err := wrs.def.load(ctx, t, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}
