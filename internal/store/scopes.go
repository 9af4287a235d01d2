package store

import (
	"context"
	"regexp"

	"github.com/kiln-build/kiln/internal/model"
)

// namePattern is what kiln accepts as the name of scopes, workspaces,
// groups, file stores, workers and templates: names appear in URLs and, for
// scopes, in metric labels.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$`)

func checkName(field, name string) error {
	if name == "" {
		return invalid(field, "is required")
	}
	if !namePattern.MatchString(name) {
		return invalid(field, "%q is not a valid name: use up to 100 letters, digits and . _ + -, starting with a letter or digit", name)
	}
	return nil
}

func scopeDef() *tableDef[model.Scope] {
	return &tableDef[model.Scope]{
		name:    "scope",
		table:   "scopes",
		columns: []string{"name", "label", "created_at"},
		id:      func(o *model.Scope) *int64 { return &o.ID },
		values:  func(o *model.Scope) []any { return []any{o.Name, o.Label, toMicros(o.CreatedAt)} },
		stamp:   func(o *model.Scope, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.Scope, error) {
			var o model.Scope
			var created int64
			if err := r.Scan(&o.ID, &o.Name, &o.Label, &created); err != nil {
				return nil, err
			}
			o.CreatedAt = fromMicros(created)
			return &o, nil
		},
		filters:    map[string]string{"name": "name"},
		nameColumn: "name",
		check: func(ctx context.Context, t *tx, old, o *model.Scope) error {
			if err := checkName("name", o.Name); err != nil {
				return err
			}
			return t.unique(ctx, "scopes", "name", o.Name, o.ID, "scope")
		},
		inUse: func(ctx context.Context, t *tx, o *model.Scope) error {
			for _, ref := range []struct{ table, what string }{
				{"workspaces", "workspaces"}, {"user_groups", "groups"}, {"tokens", "tokens"},
			} {
				if ok, err := t.exists(ctx, "SELECT 1 FROM "+ref.table+" WHERE scope_id = $1 LIMIT 1", o.ID); err != nil || ok {
					if err == nil {
						err = conflict("", "scope %q still has %s: delete them first", o.Name, ref.what)
					}
					return err
				}
			}
			for _, q := range []string{
				"DELETE FROM user_scope_activity WHERE scope_id = $1",
				"DELETE FROM activity_series WHERE scope_id = $1",
			} {
				if _, err := t.exec(ctx, q, o.ID); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// unique fails with a Conflict naming field when another row of table has
// column = value.
func (t *tx) unique(ctx context.Context, table, column string, value any, selfID int64, what string, scopeCond ...any) error {
	q := "SELECT 1 FROM " + table + " WHERE " + column + " = $1 AND id <> $2"
	args := []any{value, selfID}
	if len(scopeCond) == 2 {
		q += " AND " + scopeCond[0].(string) + " = $3"
		args = append(args, scopeCond[1])
	}
	ok, err := t.exists(ctx, q+" LIMIT 1", args...)
	if err != nil {
		return err
	}
	if ok {
		return conflict(column, "a %s named %q already exists", what, value)
	}
	return nil
}

// ref checks that a referenced row exists.
func (t *tx) ref(ctx context.Context, field, table string, id int64) error {
	ok, err := t.exists(ctx, "SELECT 1 FROM "+table+" WHERE id = $1", id)
	if err != nil {
		return err
	}
	if !ok {
		return invalid(field, "no %s with id %d", field, id)
	}
	return nil
}
