package store

import (
	"context"
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
