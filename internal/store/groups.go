package store

import (
	"context"
	"database/sql"
	"sort"

	"github.com/kiln-build/kiln/internal/model"
)

func groupDef() *tableDef[model.Group] {
	return &tableDef[model.Group]{
		name:    "group",
		table:   "user_groups",
		columns: []string{"scope_id", "name", "ephemeral", "created_at"},
		id:      func(o *model.Group) *int64 { return &o.ID },
		values: func(o *model.Group) []any {
			return []any{o.ScopeID, o.Name, o.Ephemeral, toMicros(o.CreatedAt)}
		},
		stamp: func(o *model.Group, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.Group, error) {
			var o model.Group
			var created int64
			if err := r.Scan(&o.ID, &o.ScopeID, &o.Name, &o.Ephemeral, &created); err != nil {
				return nil, err
			}
			o.CreatedAt = fromMicros(created)
			return &o, nil
		},
		filters: map[string]string{"scope": "scope_id", "name": "name", "ephemeral": "ephemeral"},
		load: func(ctx context.Context, t *tx, o *model.Group) error {
			rows, err := t.query(ctx, "SELECT user_id FROM group_members WHERE group_id = $1 ORDER BY user_id", o.ID)
			if err != nil {
				return err
			}
			defer rows.Close()
			o.Members = []int64{}
			for rows.Next() {
				var id int64
				if err := rows.Scan(&id); err != nil {
					return err
				}
				o.Members = append(o.Members, id)
			}
			return rows.Err()
		},
		check: func(ctx context.Context, t *tx, old, o *model.Group) error {
			if err := checkName("name", o.Name); err != nil {
				return err
			}
			if old != nil && old.ScopeID != o.ScopeID {
				return invalid("scope", "a group cannot move to another scope")
			}
			if err := t.ref(ctx, "scope", "scopes", o.ScopeID); err != nil {
				return err
			}
			seen := map[int64]bool{}
			for _, m := range o.Members {
				if seen[m] {
					return invalid("members", "user %d is listed twice", m)
				}
				seen[m] = true
				if err := t.ref(ctx, "members", "users", m); err != nil {
					return invalid("members", "no user with id %d", m)
				}
			}
			return t.unique(ctx, "user_groups", "name", o.Name, o.ID, "group in this scope", "scope_id", o.ScopeID)
		},
		afterWrite: func(ctx context.Context, t *tx, old, o *model.Group) error {
			id := old
			if id == nil {
				id = o
			}
			if old != nil {
				if _, err := t.exec(ctx, "DELETE FROM group_members WHERE group_id = $1", old.ID); err != nil {
					return err
				}
			}
			if o == nil {
				_, err := t.exec(ctx, "DELETE FROM workspace_members WHERE group_id = $1", old.ID)
				return err
			}
			members := append([]int64(nil), o.Members...)
			sort.Slice(members, func(i, j int) bool { return members[i] < members[j] })
			for _, m := range members {
				if _, err := t.exec(ctx, "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)", id.ID, m); err != nil {
					return err
				}
			}
			o.Members = members
			return nil
		},
		totals: func(ctx context.Context, t *tx, o *model.Group) ([]contribution, error) {
			return []contribution{one("groups", Labels{"ephemeral": boolLabel(o.Ephemeral), "scope_id": itoa(o.ScopeID)})}, nil
		},
	}
}

func workspaceMemberDef() *tableDef[model.WorkspaceMember] {
	return &tableDef[model.WorkspaceMember]{
		name:    "workspace member",
		table:   "workspace_members",
		columns: []string{"workspace_id", "user_id", "group_id", "role"},
		id:      func(o *model.WorkspaceMember) *int64 { return &o.ID },
		values: func(o *model.WorkspaceMember) []any {
			return []any{o.WorkspaceID, nullInt(o.UserID), nullInt(o.GroupID), string(o.Role)}
		},
		scan: func(r scanner) (*model.WorkspaceMember, error) {
			var o model.WorkspaceMember
			var user, group sql.NullInt64
			var role string
			if err := r.Scan(&o.ID, &o.WorkspaceID, &user, &group, &role); err != nil {
				return nil, err
			}
			o.UserID, o.GroupID, o.Role = int64Ptr(user), int64Ptr(group), model.WorkspaceRole(role)
			return &o, nil
		},
		filters:         map[string]string{"workspace": "workspace_id", "user": "user_id", "group": "group_id"},
		workspaceColumn: "workspace_id",
		check: func(ctx context.Context, t *tx, old, o *model.WorkspaceMember) error {
			if old != nil && (old.WorkspaceID != o.WorkspaceID) {
				return invalid("workspace", "cannot be changed")
			}
			if err := t.ref(ctx, "workspace", "workspaces", o.WorkspaceID); err != nil {
				return err
			}
			if (o.UserID == nil) == (o.GroupID == nil) {
				return invalid("user", "give exactly one of user and group")
			}
			if !model.ValidWorkspaceRole(o.Role) {
				return invalid("role", "%q is not a role: use viewer, contributor or owner", o.Role)
			}
			if o.UserID != nil {
				if err := t.ref(ctx, "user", "users", *o.UserID); err != nil {
					return err
				}
				if ok, err := t.exists(ctx, "SELECT 1 FROM workspace_members WHERE workspace_id = $1 AND user_id = $2 AND id <> $3", o.WorkspaceID, *o.UserID, o.ID); err != nil || ok {
					if err == nil {
						err = conflict("user", "user %d is already a member of this workspace", *o.UserID)
					}
					return err
				}
			}
			if o.GroupID != nil {
				if err := t.ref(ctx, "group", "user_groups", *o.GroupID); err != nil {
					return err
				}
				if ok, err := t.exists(ctx, "SELECT 1 FROM workspace_members WHERE workspace_id = $1 AND group_id = $2 AND id <> $3", o.WorkspaceID, *o.GroupID, o.ID); err != nil || ok {
					if err == nil {
						err = conflict("group", "group %d is already a member of this workspace", *o.GroupID)
					}
					return err
				}
			}
			return nil
		},
	}
}
