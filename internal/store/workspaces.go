package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

func workspaceDef() *tableDef[model.Workspace] {
	return &tableDef[model.Workspace]{
		name:    "workspace",
		table:   "workspaces",
		columns: []string{"scope_id", "name", "public", "expiration_delay", "created_at"},
		id:      func(o *model.Workspace) *int64 { return &o.ID },
		values: func(o *model.Workspace) []any {
			var delay any
			if o.ExpirationDelay != nil {
				delay = time.Duration(*o.ExpirationDelay).Microseconds()
			}
			return []any{o.ScopeID, o.Name, o.Public, delay, toMicros(o.CreatedAt)}
		},
		stamp: func(o *model.Workspace, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.Workspace, error) {
			var o model.Workspace
			var delay sql.NullInt64
			var created int64
			if err := r.Scan(&o.ID, &o.ScopeID, &o.Name, &o.Public, &delay, &created); err != nil {
				return nil, err
			}
			if delay.Valid {
				d := model.Duration(time.Duration(delay.Int64) * time.Microsecond)
				o.ExpirationDelay = &d
			}
			o.CreatedAt = fromMicros(created)
			return &o, nil
		},
		filters:         map[string]string{"scope": "scope_id", "name": "name", "public": "public"},
		workspaceColumn: "id",
		check: func(ctx context.Context, t *tx, old, o *model.Workspace) error {
			if err := checkName("name", o.Name); err != nil {
				return err
			}
			if old != nil && old.ScopeID != o.ScopeID {
				return invalid("scope", "a workspace cannot move to another scope")
			}
			if err := t.ref(ctx, "scope", "scopes", o.ScopeID); err != nil {
				return err
			}
			if o.ExpirationDelay != nil && *o.ExpirationDelay < 0 {
				return invalid("expiration_delay", "must not be negative")
			}
			return t.unique(ctx, "workspaces", "name", o.Name, o.ID, "workspace in this scope", "scope_id", o.ScopeID)
		},
		totals: func(ctx context.Context, t *tx, o *model.Workspace) ([]contribution, error) {
			return []contribution{one("workspaces", Labels{
				"private": boolLabel(!o.Public), "expires": boolLabel(o.ExpirationDelay != nil),
				"scope_id": itoa(o.ScopeID),
			})}, nil
		},
		inUse: func(ctx context.Context, t *tx, o *model.Workspace) error {
			for _, ref := range []struct{ table, what string }{
				{"work_requests", "work requests"}, {"artifacts", "artifacts"}, {"assets", "assets"},
				{"collections", "collections"}, {"workflow_templates", "workflow templates"},
			} {
				if ok, err := t.exists(ctx, "SELECT 1 FROM "+ref.table+" WHERE workspace_id = $1 LIMIT 1", o.ID); err != nil || ok {
					if err == nil {
						err = conflict("", "workspace %q still has %s: delete them first", o.Name, ref.what)
					}
					return err
				}
			}
			_, err := t.exec(ctx, "DELETE FROM workspace_members WHERE workspace_id = $1", o.ID)
			return err
		},
	}
}
