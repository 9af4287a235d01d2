package store

import (
	"context"
	"database/sql"
	"regexp"

	"github.com/kiln-build/kiln/internal/model"
)

// categoryPattern is the shape of artifact, asset and collection categories
// ("debian:binary-package"): they label public metrics, so they are bounded.
var categoryPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}(:[a-z0-9][a-z0-9._-]{0,63})?$`)

func checkCategory(c string) error {
	if c == "" {
		return invalid("category", "is required")
	}
	if !categoryPattern.MatchString(c) {
		return invalid("category", "%q is not a category: use lower-case words like \"debian:binary-package\"", c)
	}
	return nil
}

// fixedOnceCreated refuses a change of the workspace or category of an
// asset, collection or artifact (what): the running totals count objects
// by scope and category, and the permission to create was checked for the
// workspace it was created in. Each refusal names its own field.
func fixedOnceCreated(what string, oldWorkspace, newWorkspace int64, oldCategory, newCategory string) error {
	if oldWorkspace != newWorkspace {
		return invalid("workspace", "cannot be changed: create a new %s in the other workspace", what)
	}
	if oldCategory != newCategory {
		return invalid("category", "cannot be changed: create a new %s of the other category", what)
	}
	return nil
}

// workspaceScope returns the scope of a workspace, failing with a FieldError
// on field when it does not exist.
func (t *tx) workspaceScope(ctx context.Context, field string, workspaceID int64) (int64, error) {
	if t.scopes == nil {
		t.scopes = map[int64]int64{}
	}
	if s, ok := t.scopes[workspaceID]; ok {
		return s, nil
	}
	var scope int64
	err := t.queryRow(ctx, "SELECT scope_id FROM workspaces WHERE id = $1", workspaceID).Scan(&scope)
	if err == sql.ErrNoRows {
		return 0, invalid(field, "no workspace with id %d", workspaceID)
	}
	if err != nil {
		return 0, err
	}
	t.scopes[workspaceID] = scope
	return scope, nil
}

func assetDef() *tableDef[model.Asset] {
	return &tableDef[model.Asset]{
		name:    "asset",
		table:   "assets",
		columns: []string{"category", "workspace_id", "data", "created_by", "created_at"},
		id:      func(o *model.Asset) *int64 { return &o.ID },
		values: func(o *model.Asset) []any {
			return []any{o.Category, o.WorkspaceID, jsonText(o.Data), nullInt(o.CreatedBy), toMicros(o.CreatedAt)}
		},
		stamp: func(o *model.Asset, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.Asset, error) {
			var o model.Asset
			var data []byte
			var by sql.NullInt64
			var created int64
			if err := r.Scan(&o.ID, &o.Category, &o.WorkspaceID, &data, &by, &created); err != nil {
				return nil, err
			}
			o.Data, o.CreatedBy, o.CreatedAt = rawJSON(data), int64Ptr(by), fromMicros(created)
			return &o, nil
		},
		filters:         map[string]string{"workspace": "workspace_id", "category": "category"},
		workspaceColumn: "workspace_id",
		check: func(ctx context.Context, t *tx, old, o *model.Asset) error {
			if err := checkCategory(o.Category); err != nil {
				return err
			}
			if old != nil {
				if err := fixedOnceCreated("asset", old.WorkspaceID, o.WorkspaceID, old.Category, o.Category); err != nil {
					return err
				}
			}
			if _, err := t.workspaceScope(ctx, "workspace", o.WorkspaceID); err != nil {
				return err
			}
			return checkJSONObject("data", o.Data)
		},
		totals: func(ctx context.Context, t *tx, o *model.Asset) ([]contribution, error) {
			scope, err := t.workspaceScope(ctx, "workspace", o.WorkspaceID)
			if err != nil {
				return nil, err
			}
			return []contribution{one("assets", Labels{"category": o.Category, "scope_id": itoa(scope)})}, nil
		},
	}
}
