package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"

	"github.com/kiln-build/kiln/internal/model"
)

var taskNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// WorkerTaskData is the part of a Worker task's data that decides where it
// may run; it is the only task data that reaches public metrics.
type WorkerTaskData struct {
	HostArchitecture string `json:"host_architecture"`
	Backend          string `json:"backend"`
}

// ParseWorkerTaskData reads host_architecture and backend from task data;
// backend defaults to "auto".
func ParseWorkerTaskData(data json.RawMessage) WorkerTaskData {
	var d WorkerTaskData
	_ = json.Unmarshal(data, &d)
	if d.Backend == "" {
		d.Backend = "auto"
	}
	return d
}

func workRequestDef() *tableDef[model.WorkRequest] {
	return &tableDef[model.WorkRequest]{
		name:  "work request",
		table: "work_requests",
		columns: []string{"task_type", "task_name", "workspace_id", "status", "result", "data", "priority",
			"created_by", "created_at", "started_at", "completed_at", "worker_id", "parent_id",
			"workflow_template_id", "step_name", "retries", "max_retries", "statistics", "execution_time", "output", "due_at"},
		fields: map[string]string{"data": "task_data", "statistics": "runtime_statistics"},
		id:     func(o *model.WorkRequest) *int64 { return &o.ID },
		values: func(o *model.WorkRequest) []any {
			var stats, output any
			if o.Statistics != nil {
				b, _ := json.Marshal(o.Statistics)
				stats = jsonDoc(b)
			}
			if len(o.Output) > 0 {
				output = jsonDoc(o.Output)
			}
			return []any{string(o.TaskType), o.TaskName, o.WorkspaceID, string(o.Status), string(o.Result),
				jsonText(o.Data), o.Priority, nullInt(o.CreatedBy), toMicros(o.CreatedAt), nullMicros(o.StartedAt),
				nullMicros(o.CompletedAt), nullInt(o.WorkerID), nullInt(o.ParentID), nullInt(o.WorkflowTemplateID),
				o.StepName, o.Retries, o.MaxRetries, stats, nullInt(o.ExecutionTime), output, nullMicros(o.DueAt)}
		},
		stamp: func(o *model.WorkRequest, now int64) { o.CreatedAt = fromMicros(now) },
		scan:  scanWorkRequest,
		filters: map[string]string{"workspace": "workspace_id", "status": "status", "task_type": "task_type",
			"task_name": "task_name", "worker": "worker_id", "parent": "parent_id", "result": "result",
			"workflow_template": "workflow_template_id"},
		workspaceColumn: "workspace_id",
		load: func(ctx context.Context, t *tx, o *model.WorkRequest) error {
			rows, err := t.query(ctx, "SELECT depends_on_id FROM work_request_dependencies WHERE work_request_id = $1 ORDER BY depends_on_id", o.ID)
			if err != nil {
				return err
			}
			defer rows.Close()
			o.Dependencies = []int64{}
			for rows.Next() {
				var d int64
				if err := rows.Scan(&d); err != nil {
					return err
				}
				o.Dependencies = append(o.Dependencies, d)
			}
			return rows.Err()
		},
		check:      checkWorkRequest,
		totals:     workRequestTotals,
		afterWrite: afterWorkRequestWrite,
		inUse: func(ctx context.Context, t *tx, o *model.WorkRequest) error {
			if !o.Status.Finished() {
				return conflict("status", "work request %d is %s: abort it before deleting it", o.ID, o.Status)
			}
			for _, ref := range []struct{ q, what string }{
				{"SELECT 1 FROM work_requests WHERE parent_id = $1 LIMIT 1", "has children"},
				{"SELECT 1 FROM work_request_dependencies WHERE depends_on_id = $1 LIMIT 1", "is a dependency of other work requests"},
				{"SELECT 1 FROM artifacts WHERE work_request_id = $1 LIMIT 1", "produced artifacts"},
			} {
				if ok, err := t.exists(ctx, ref.q, o.ID); err != nil || ok {
					if err == nil {
						err = conflict("", "work request %d %s", o.ID, ref.what)
					}
					return err
				}
			}
			_, err := t.exec(ctx, "DELETE FROM work_request_dependencies WHERE work_request_id = $1", o.ID)
			return err
		},
	}
}

func scanWorkRequest(r scanner) (*model.WorkRequest, error) { return scanWorkRequestWith(r) }

// scanWorkRequestWith reads the id and columns of a work request, then
// extra.
func scanWorkRequestWith(r scanner, extra ...any) (*model.WorkRequest, error) {
	var o model.WorkRequest
	var typ, status, result string
	var data, stats, output []byte
	var by, started, completed, worker, parent, tmpl, exec, due sql.NullInt64
	var created int64
	if err := r.Scan(append([]any{&o.ID, &typ, &o.TaskName, &o.WorkspaceID, &status, &result, &data, &o.Priority, &by, &created,
		&started, &completed, &worker, &parent, &tmpl, &o.StepName, &o.Retries, &o.MaxRetries, &stats, &exec, &output, &due}, extra...)...); err != nil {
		return nil, err
	}
	o.DueAt = timePtr(due)
	o.TaskType, o.Status, o.Result, o.Data = model.TaskType(typ), model.Status(status), model.Result(result), rawJSON(data)
	o.CreatedBy, o.CreatedAt, o.StartedAt, o.CompletedAt = int64Ptr(by), fromMicros(created), timePtr(started), timePtr(completed)
	o.WorkerID, o.ParentID, o.WorkflowTemplateID, o.ExecutionTime = int64Ptr(worker), int64Ptr(parent), int64Ptr(tmpl), int64Ptr(exec)
	if len(stats) > 0 {
		o.Statistics = &model.RuntimeStatistics{}
		if err := json.Unmarshal(stats, o.Statistics); err != nil {
			return nil, fmt.Errorf("work request %d statistics: %w", o.ID, err)
		}
	}
	if len(output) > 0 {
		o.Output = json.RawMessage(output)
	}
	return &o, nil
}

func checkWorkRequest(ctx context.Context, t *tx, old, o *model.WorkRequest) error {
	if !o.TaskType.Valid() {
		return invalid("task_type", "%q is not a task type: use Worker, Server, Internal, Workflow, Signing or Wait", o.TaskType)
	}
	if !taskNamePattern.MatchString(o.TaskName) {
		return invalid("task_name", "%q is not a task name: use up to 64 lower-case letters, digits and _ . -", o.TaskName)
	}
	if !o.Status.Valid() {
		return invalid("status", "%q is not a status", o.Status)
	}
	if !o.Result.Valid() {
		return invalid("result", "%q is not a result", o.Result)
	}
	if o.Status == model.StatusCompleted && o.Result == model.ResultNone {
		return invalid("result", "a completed work request needs a result")
	}
	if err := checkJSONObject("task_data", o.Data); err != nil {
		return err
	}
	if o.TaskType == model.TaskWorker {
		var d map[string]any
		_ = json.Unmarshal(o.Data, &d)
		arch, _ := d["host_architecture"].(string)
		if arch == "" {
			return invalid("task_data", "Worker tasks need a host_architecture (e.g. \"amd64\")")
		}
		if b, ok := d["backend"]; ok {
			if s, _ := b.(string); s == "" {
				return invalid("task_data", "backend must be a non-empty string such as \"auto\", \"host\" or \"unshare\"")
			}
		}
	}
	if o.MaxRetries < 0 || o.Retries < 0 {
		return invalid("max_retries", "must not be negative")
	}
	if old != nil {
		if old.TaskType != o.TaskType || old.TaskName != o.TaskName || old.WorkspaceID != o.WorkspaceID {
			return invalid("task_type", "task type, task name and workspace cannot be changed")
		}
		// a finished request moves again only when retried (one more
		// retry, back to the queue; a workflow back to running, because
		// one of its steps was)
		retried := o.Retries == old.Retries+1 && (o.Status == model.StatusPending || o.Status == model.StatusBlocked ||
			o.TaskType == model.TaskWorkflow && o.Status == model.StatusRunning)
		if old.Status.Finished() && o.Status != old.Status && !retried {
			return conflict("status", "work request %d is already %s", o.ID, old.Status)
		}
	}
	if _, err := t.workspaceScope(ctx, "workspace", o.WorkspaceID); err != nil {
		return err
	}
	if o.ParentID != nil && (old == nil || old.ParentID == nil || *old.ParentID != *o.ParentID) {
		if err := t.ref(ctx, "parent", "work_requests", *o.ParentID); err != nil {
			return err
		}
	}
	if o.WorkerID != nil && (old == nil || old.WorkerID == nil || *old.WorkerID != *o.WorkerID) {
		if err := t.ref(ctx, "worker", "workers", *o.WorkerID); err != nil {
			return err
		}
	}
	if old == nil {
		seen := map[int64]bool{}
		for _, d := range o.Dependencies {
			if seen[d] {
				return invalid("dependencies", "work request %d is listed twice", d)
			}
			seen[d] = true
			var ws int64
			err := t.queryRow(ctx, "SELECT workspace_id FROM work_requests WHERE id = $1", d).Scan(&ws)
			if err == sql.ErrNoRows {
				return invalid("dependencies", "no work request with id %d", d)
			}
			if err != nil {
				return err
			}
			if ws != o.WorkspaceID {
				return invalid("dependencies", "work request %d is in another workspace", d)
			}
		}
	}
	return nil
}

// workRequestLabels are the labels of the work_requests family: task data
// reaches them only for Worker tasks, and only host_architecture and
// backend.
func workRequestLabels(scope int64, o *model.WorkRequest) Labels {
	l := Labels{"task_type": string(o.TaskType), "task_name": o.TaskName, "scope_id": itoa(scope), "status": string(o.Status)}
	if o.TaskType == model.TaskWorker {
		d := ParseWorkerTaskData(o.Data)
		l["host_architecture"], l["backend"] = d.HostArchitecture, d.Backend
	}
	return l
}

func workRequestTotals(ctx context.Context, t *tx, o *model.WorkRequest) ([]contribution, error) {
	scope, err := t.workspaceScope(ctx, "workspace", o.WorkspaceID)
	if err != nil {
		return nil, err
	}
	cs := append(rollupContributions(o), one("work_requests", workRequestLabels(scope, o)))
	if o.Status == model.StatusCompleted && o.ExecutionTime != nil {
		us := *o.ExecutionTime
		cs = append(cs, histo("task_execution_times",
			Labels{"task_type": string(o.TaskType), "task_name": o.TaskName, "scope_id": itoa(scope)},
			us, TaskExecutionBuckets)...)
	}
	return cs, nil
}

// executionTime is how long a completed request ran, in microseconds: the
// runner's measured duration when it sent one, else completed_at −
// started_at. Requests that never started have none.
func executionTime(o *model.WorkRequest) (int64, bool) {
	if o.StartedAt == nil {
		return 0, false
	}
	if o.Statistics != nil && o.Statistics.Duration > 0 {
		return int64(o.Statistics.Duration * 1e6), true
	}
	if o.CompletedAt == nil {
		return 0, false
	}
	return max(0, o.CompletedAt.Sub(*o.StartedAt).Microseconds()), true
}

// transitioned queues the hooks of a request that moved from old (nil: it
// is new) to o (nil: deleted), to run after commit, and the notification
// of a finished one, to commit with the transaction.
func (t *tx) transitioned(old, o *model.WorkRequest) {
	if old != nil && o != nil && !old.Status.Finished() && o.Status.Finished() && t.s.notifications != nil {
		t.outbox = append(t.outbox, outboxRow{workRequest: o.ID, payload: t.s.notifications(*o)})
	}
	if old != nil && o != nil && !old.Status.Finished() && o.Status.Finished() && len(t.s.finishHooks) > 0 {
		done := *o
		t.after = append(t.after, func() { t.s.finished(done) })
	}
	if o != nil && o.Status == model.StatusPending && (old == nil || old.Status != model.StatusPending) && len(t.s.pendingHooks) > 0 {
		now := *o
		t.after = append(t.after, func() {
			for _, h := range t.s.pendingHooks {
				h(now)
			}
		})
	}
}

// afterWorkRequestWrite writes dependencies of new requests and keeps the
// busy flag of affected workers' running totals exact.
func afterWorkRequestWrite(ctx context.Context, t *tx, old, o *model.WorkRequest) error {
	t.transitioned(old, o)
	if old == nil && o != nil {
		deps := append([]int64(nil), o.Dependencies...)
		sort.Slice(deps, func(i, j int) bool { return deps[i] < deps[j] })
		for _, d := range deps {
			if _, err := t.exec(ctx, "INSERT INTO work_request_dependencies (work_request_id, depends_on_id) VALUES ($1, $2)", o.ID, d); err != nil {
				return err
			}
		}
		o.Dependencies = deps
	}
	holds := func(w *model.WorkRequest, worker int64) bool {
		return w != nil && w.Status == model.StatusRunning && w.WorkerID != nil && *w.WorkerID == worker
	}
	affected := map[int64]bool{}
	for _, w := range []*model.WorkRequest{old, o} {
		if w != nil && w.WorkerID != nil {
			affected[*w.WorkerID] = true
		}
	}
	id := int64(0)
	if old != nil {
		id = old.ID
	} else {
		id = o.ID
	}
	for worker := range affected {
		was, is := holds(old, worker), holds(o, worker)
		if was == is {
			continue
		}
		// the worker's lock first, then the count in a statement of its
		// own: a worker may run several requests, and the transactions
		// that start or end another one hold that lock (see
		// ClaimWorkRequest)
		if err := t.lockWorkerRow(ctx, worker); err != nil {
			return err
		}
		others, err := t.exists(ctx, "SELECT 1 FROM work_requests WHERE worker_id = $1 AND status = 'running' AND id <> $2 LIMIT 1", worker, id)
		if err != nil {
			return err
		}
		if others {
			continue // busy either way
		}
		w, err := t.s.workers().get(ctx, t, worker, nil, false)
		if err != nil {
			return err
		}
		w.Busy = was
		if err := (t.s.workers()).adjust(ctx, t, w, -1); err != nil {
			return err
		}
		w.Busy = is
		if err := (t.s.workers()).adjust(ctx, t, w, +1); err != nil {
			return err
		}
	}
	return nil
}
