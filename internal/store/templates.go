package store

import (
	"context"
	"database/sql"
	"encoding/json"

	"github.com/kiln-build/kiln/internal/model"
)

func workflowTemplateDef() *tableDef[model.WorkflowTemplate] {
	return &tableDef[model.WorkflowTemplate]{
		name:    "workflow template",
		table:   "workflow_templates",
		columns: []string{"workspace_id", "name", "task_name", "static_data", "priority", "metrics", "created_at"},
		fields:  map[string]string{"static_data": "static_parameters", "task_name": "kind"},
		id:      func(o *model.WorkflowTemplate) *int64 { return &o.ID },
		values: func(o *model.WorkflowTemplate) []any {
			metrics := jsonDoc("[]")
			if len(o.Metrics) > 0 {
				metrics = jsonDoc(o.Metrics)
			}
			return []any{o.WorkspaceID, o.Name, o.TaskName, jsonText(o.StaticData), o.Priority, metrics, toMicros(o.CreatedAt)}
		},
		stamp: func(o *model.WorkflowTemplate, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.WorkflowTemplate, error) {
			var o model.WorkflowTemplate
			var data, metrics []byte
			var created int64
			if err := r.Scan(&o.ID, &o.WorkspaceID, &o.Name, &o.TaskName, &data, &o.Priority, &metrics, &created); err != nil {
				return nil, err
			}
			o.StaticData, o.Metrics, o.CreatedAt = rawJSON(data), json.RawMessage(metrics), fromMicros(created)
			return &o, nil
		},
		filters:         map[string]string{"workspace": "workspace_id", "name": "name", "task_name": "task_name"},
		workspaceColumn: "workspace_id",
		check: func(ctx context.Context, t *tx, old, o *model.WorkflowTemplate) error {
			if err := checkName("name", o.Name); err != nil {
				return err
			}
			if !taskNamePattern.MatchString(o.TaskName) {
				return invalid("task_name", "%q is not a workflow kind", o.TaskName)
			}
			if old != nil && old.WorkspaceID != o.WorkspaceID {
				return invalid("workspace", "cannot be changed")
			}
			if _, err := t.workspaceScope(ctx, "workspace", o.WorkspaceID); err != nil {
				return err
			}
			if err := checkJSONObject("static_parameters", o.StaticData); err != nil {
				return err
			}
			if len(o.Metrics) > 0 {
				var list []any
				if err := json.Unmarshal(o.Metrics, &list); err != nil {
					return invalid("metrics", "must be a JSON list")
				}
			}
			return t.unique(ctx, "workflow_templates", "name", o.Name, o.ID, "workflow template in this workspace", "workspace_id", o.WorkspaceID)
		},
		totals: func(ctx context.Context, t *tx, o *model.WorkflowTemplate) ([]contribution, error) {
			scope, err := t.workspaceScope(ctx, "workspace", o.WorkspaceID)
			if err != nil {
				return nil, err
			}
			return []contribution{one("workflow_templates", Labels{"task_name": o.TaskName, "scope_id": itoa(scope)})}, nil
		},
		inUse: func(ctx context.Context, t *tx, o *model.WorkflowTemplate) error {
			if ok, err := t.exists(ctx, "SELECT 1 FROM work_requests WHERE workflow_template_id = $1 LIMIT 1", o.ID); err != nil || ok {
				if err == nil {
					err = conflict("", "workflow template %q has started workflows", o.Name)
				}
				return err
			}
			return nil
		},
	}
}

// WorkflowTemplates is the workflow template table.
func (s *SQL) WorkflowTemplates() Table[model.WorkflowTemplate] {
	return &table[model.WorkflowTemplate]{s, s.defs.workflowTemplates}
}

func workerPoolDef() *tableDef[model.WorkerPool] {
	return &tableDef[model.WorkerPool]{
		name:  "worker pool",
		table: "worker_pools",
		columns: []string{"name", "provider", "enabled", "architectures", "specifications", "min_workers", "max_workers",
			"runtime", "created_at"},
		id: func(o *model.WorkerPool) *int64 { return &o.ID },
		values: func(o *model.WorkerPool) []any {
			archs, _ := json.Marshal(o.Architectures)
			if o.Architectures == nil {
				archs = []byte("[]")
			}
			return []any{o.Name, o.Provider, o.Enabled, jsonDoc(archs), jsonText(o.Specifications), o.MinWorkers, o.MaxWorkers,
				int64(o.RuntimeSeconds * 1e6), toMicros(o.CreatedAt)}
		},
		stamp: func(o *model.WorkerPool, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.WorkerPool, error) {
			var o model.WorkerPool
			var archs, specs []byte
			var runtime, created int64
			if err := r.Scan(&o.ID, &o.Name, &o.Provider, &o.Enabled, &archs, &specs, &o.MinWorkers, &o.MaxWorkers, &runtime, &created); err != nil {
				return nil, err
			}
			_ = json.Unmarshal(archs, &o.Architectures)
			o.Specifications, o.RuntimeSeconds, o.CreatedAt = rawJSON(specs), float64(runtime)/1e6, fromMicros(created)
			return &o, nil
		},
		filters:    map[string]string{"name": "name", "provider": "provider"},
		nameColumn: "name",
		check: func(ctx context.Context, t *tx, old, o *model.WorkerPool) error {
			if err := checkName("name", o.Name); err != nil {
				return err
			}
			if o.Provider == "" {
				o.Provider = "static"
			}
			if o.MinWorkers < 0 || o.MaxWorkers < 0 || (o.MaxWorkers > 0 && o.MinWorkers > o.MaxWorkers) {
				return invalid("min_workers", "need 0 ≤ min_workers ≤ max_workers")
			}
			if err := checkJSONObject("specifications", o.Specifications); err != nil {
				return err
			}
			if old != nil && int64(old.RuntimeSeconds*1e6) != int64(o.RuntimeSeconds*1e6) {
				return invalid("runtime_seconds", "is accounted by kiln and cannot be set")
			}
			return t.unique(ctx, "worker_pools", "name", o.Name, o.ID, "worker pool")
		},
		inUse: func(ctx context.Context, t *tx, o *model.WorkerPool) error {
			if ok, err := t.exists(ctx, "SELECT 1 FROM workers WHERE worker_pool_id = $1 LIMIT 1", o.ID); err != nil || ok {
				if err == nil {
					err = conflict("", "worker pool %q still has workers", o.Name)
				}
				return err
			}
			return nil
		},
	}
}

// WorkerPools is the worker pool table; runtime is accounted by
// StopPoolInstance.
func (s *SQL) WorkerPools() Table[model.WorkerPool] {
	return &table[model.WorkerPool]{s, s.defs.workerPools}
}

// StartPoolInstance records that a pool worker's instance started now.
func (s *SQL) StartPoolInstance(ctx context.Context, workerID int64) error {
	_, err := s.db.ExecContext(ctx, "UPDATE workers SET instance_started_at = $1 WHERE id = $2 AND worker_pool_id IS NOT NULL",
		toMicros(s.now()), workerID)
	return err
}

// StopPoolInstance adds the runtime of a pool worker's instance to its
// pool, in one transaction with clearing the instance's start.
func (s *SQL) StopPoolInstance(ctx context.Context, workerID int64) error {
	return s.inTx(ctx, func(t *tx) error {
		var pool, started sql.NullInt64
		if err := t.queryRow(ctx, "SELECT worker_pool_id, instance_started_at FROM workers WHERE id = $1"+t.forUpdate(), workerID).Scan(&pool, &started); err != nil {
			return err
		}
		if !pool.Valid || !started.Valid {
			return nil
		}
		ran := max(0, toMicros(s.now())-started.Int64)
		if _, err := t.exec(ctx, "UPDATE worker_pools SET runtime = runtime + $1 WHERE id = $2", ran, pool.Int64); err != nil {
			return err
		}
		_, err := t.exec(ctx, "UPDATE workers SET instance_started_at = NULL WHERE id = $1", workerID)
		return err
	})
}

// recordWorkflowActivity notes that a user created a root workflow in a
// scope now, for the user-activity histograms, which remember its label
// sets (activity.go).
func (t *tx) recordWorkflowActivity(ctx context.Context, userID, scopeID, at int64) error {
	if _, err := t.exec(ctx, `INSERT INTO user_scope_activity (user_id, scope_id, last_workflow_at) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, scope_id) DO UPDATE SET last_workflow_at =
		CASE WHEN excluded.last_workflow_at > user_scope_activity.last_workflow_at THEN excluded.last_workflow_at ELSE user_scope_activity.last_workflow_at END`,
		userID, scopeID, at); err != nil {
		return err
	}
	return t.rememberActivity(ctx, userID, scopeID)
}
