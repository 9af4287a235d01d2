package store

import (
	"context"
	"database/sql"
	"net/mail"
	"regexp"
	"strconv"

	"github.com/kiln-build/kiln/internal/model"
)

var usernamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}$`)

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func userDef() *tableDef[model.User] {
	return &tableDef[model.User]{
		name:    "user",
		table:   "users",
		columns: []string{"username", "email", "active", "is_admin", "is_system", "created_at"},
		id:      func(o *model.User) *int64 { return &o.ID },
		values: func(o *model.User) []any {
			return []any{o.Username, o.Email, o.Active, o.IsAdmin, o.System, toMicros(o.CreatedAt)}
		},
		stamp: func(o *model.User, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.User, error) {
			var o model.User
			var created int64
			if err := r.Scan(&o.ID, &o.Username, &o.Email, &o.Active, &o.IsAdmin, &o.System, &created); err != nil {
				return nil, err
			}
			o.CreatedAt = fromMicros(created)
			return &o, nil
		},
		filters:    map[string]string{"username": "username", "active": "active"},
		nameColumn: "username",
		check: func(ctx context.Context, t *tx, old, o *model.User) error {
			if o.Username == "" {
				return invalid("username", "is required")
			}
			// the internal user's name starts with "_" on purpose: no
			// person can register it
			if !usernamePattern.MatchString(o.Username) && !(o.System && o.Username == SystemUsername) {
				return invalid("username", "%q is not a valid user name: use up to 150 letters, digits and . _ @ + -", o.Username)
			}
			if o.Email != "" {
				if _, err := mail.ParseAddress(o.Email); err != nil {
					return invalid("email", "%q is not an e-mail address", o.Email)
				}
			}
			if old != nil && old.System != o.System {
				return invalid("system", "cannot be changed")
			}
			return t.unique(ctx, "users", "username", o.Username, o.ID, "user")
		},
		totals: func(ctx context.Context, t *tx, o *model.User) ([]contribution, error) {
			if o.System {
				return nil, nil // public metrics leave out the internal user
			}
			return []contribution{one("users", Labels{"active": boolLabel(o.Active)})}, nil
		},
		afterWrite: func(ctx context.Context, t *tx, old, o *model.User) error {
			switch {
			case old != nil && o != nil && old.Active != o.Active && !o.System:
				// identities are counted by their user's active flag
				counts, err := t.identityIssuers(ctx, o.ID)
				if err != nil {
					return err
				}
				for issuer, n := range counts {
					t.add(identityKey(old.Active, issuer), -n)
					t.add(identityKey(o.Active, issuer), n)
				}
			case o == nil: // delete: take dependent rows with it
				counts, err := t.identityIssuers(ctx, old.ID)
				if err != nil {
					return err
				}
				for issuer, n := range counts {
					if !old.System {
						t.add(identityKey(old.Active, issuer), -n)
					}
				}
				if err := t.deleteTokensWhere(ctx, "user_id", old.ID); err != nil {
					return err
				}
				for _, q := range []string{
					"DELETE FROM identities WHERE user_id = $1",
					"DELETE FROM group_members WHERE user_id = $1",
					"DELETE FROM workspace_members WHERE user_id = $1",
					"DELETE FROM user_scope_activity WHERE user_id = $1",
				} {
					if _, err := t.exec(ctx, q, old.ID); err != nil {
						return err
					}
				}
			}
			return nil
		},
		inUse: func(ctx context.Context, t *tx, o *model.User) error {
			if o.System {
				return conflict("", "the system user cannot be deleted")
			}
			for _, ref := range []struct{ table, what string }{
				{"work_requests", "work requests"}, {"artifacts", "artifacts"}, {"assets", "assets"},
			} {
				if ok, err := t.exists(ctx, "SELECT 1 FROM "+ref.table+" WHERE created_by = $1 LIMIT 1", o.ID); err != nil || ok {
					if err == nil {
						err = conflict("", "user %q created %s; deactivate the user instead (active: false)", o.Username, ref.what)
					}
					return err
				}
			}
			return nil
		},
	}
}

func identityKey(active bool, issuer string) totalKey {
	return key("user_identities", Labels{"active": boolLabel(active), "issuer": issuer})
}

// identityIssuers counts a user's identities by issuer (a handful of rows).
func (t *tx) identityIssuers(ctx context.Context, userID int64) (map[string]int64, error) {
	rows, err := t.query(ctx, "SELECT issuer, COUNT(*) FROM identities WHERE user_id = $1 GROUP BY issuer", userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var issuer string
		var n int64
		if err := rows.Scan(&issuer, &n); err != nil {
			return nil, err
		}
		out[issuer] = n
	}
	return out, rows.Err()
}

func (t *tx) userFlags(ctx context.Context, userID int64) (active, system bool, err error) {
	err = t.queryRow(ctx, "SELECT active, is_system FROM users WHERE id = $1", userID).Scan(&active, &system)
	if err == sql.ErrNoRows {
		return false, false, invalid("user", "no user with id %d", userID)
	}
	return active, system, err
}

func identityDef() *tableDef[model.Identity] {
	return &tableDef[model.Identity]{
		name:    "identity",
		table:   "identities",
		columns: []string{"user_id", "issuer", "subject", "created_at"},
		id:      func(o *model.Identity) *int64 { return &o.ID },
		values: func(o *model.Identity) []any {
			return []any{o.UserID, o.Issuer, o.Subject, toMicros(o.CreatedAt)}
		},
		stamp: func(o *model.Identity, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.Identity, error) {
			var o model.Identity
			var created int64
			if err := r.Scan(&o.ID, &o.UserID, &o.Issuer, &o.Subject, &created); err != nil {
				return nil, err
			}
			o.CreatedAt = fromMicros(created)
			return &o, nil
		},
		filters: map[string]string{"user": "user_id", "issuer": "issuer"},
		check: func(ctx context.Context, t *tx, old, o *model.Identity) error {
			if o.Issuer == "" {
				return invalid("issuer", "is required")
			}
			if len(o.Issuer) > 200 {
				return invalid("issuer", "must be at most 200 characters")
			}
			if o.Subject == "" {
				return invalid("subject", "is required")
			}
			if err := t.ref(ctx, "user", "users", o.UserID); err != nil {
				return err
			}
			ok, err := t.exists(ctx, "SELECT 1 FROM identities WHERE issuer = $1 AND subject = $2 AND id <> $3", o.Issuer, o.Subject, o.ID)
			if err != nil {
				return err
			}
			if ok {
				return conflict("subject", "this subject of issuer %q is already linked to a user", o.Issuer)
			}
			return nil
		},
		totals: func(ctx context.Context, t *tx, o *model.Identity) ([]contribution, error) {
			active, system, err := t.userFlags(ctx, o.UserID)
			if err != nil || system {
				return nil, err // the internal user is never counted
			}
			return []contribution{{identityKey(active, o.Issuer), 1}}, nil
		},
		afterWrite: func(ctx context.Context, t *tx, old, o *model.Identity) error {
			if o == nil || (old != nil && old.UserID == o.UserID && old.Issuer == o.Issuer) {
				return nil
			}
			return t.rememberIdentity(ctx, o.UserID, o.Issuer)
		},
	}
}
