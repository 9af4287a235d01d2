package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// HashToken is how a token secret is stored and looked up: hex SHA-256.
// Secrets are 256 random bits, so a plain hash is enough (no salt needed).
func HashToken(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// NewSecret returns a fresh token secret. The "kiln_" prefix lets secret
// scanners recognise leaked kiln tokens.
func NewSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return "kiln_" + hex.EncodeToString(b)
}

// lastSeenGranularity is how stale last_seen_at may get before a request
// rewrites it; it keeps authentication from writing on every request.
const lastSeenGranularity = time.Minute

func tokenDef() *tableDef[model.Token] {
	return &tableDef[model.Token]{
		name:  "token",
		table: "tokens",
		columns: []string{"hash", "prefix", "comment", "enabled", "user_id", "worker_id", "scope_id",
			"last_seen_at", "expires_at", "created_at"},
		id: func(o *model.Token) *int64 { return &o.ID },
		values: func(o *model.Token) []any {
			return []any{o.Hash, o.Prefix, o.Comment, o.Enabled, nullInt(o.UserID), nullInt(o.WorkerID),
				nullInt(o.ScopeID), nullMicros(o.LastSeenAt), nullMicros(o.ExpiresAt), toMicros(o.CreatedAt)}
		},
		stamp: func(o *model.Token, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.Token, error) {
			var o model.Token
			var user, worker, scope, seen, expires sql.NullInt64
			var created int64
			if err := r.Scan(&o.ID, &o.Hash, &o.Prefix, &o.Comment, &o.Enabled, &user, &worker, &scope,
				&seen, &expires, &created); err != nil {
				return nil, err
			}
			o.UserID, o.WorkerID, o.ScopeID = int64Ptr(user), int64Ptr(worker), int64Ptr(scope)
			o.LastSeenAt, o.ExpiresAt, o.CreatedAt = timePtr(seen), timePtr(expires), fromMicros(created)
			return &o, nil
		},
		filters: map[string]string{"user": "user_id", "worker": "worker_id", "enabled": "enabled"},
		check: func(ctx context.Context, t *tx, old, o *model.Token) error {
			if len(o.Comment) > 500 {
				return invalid("comment", "must be at most 500 characters")
			}
			if old != nil && (old.Hash != o.Hash || old.Prefix != o.Prefix) {
				return invalid("secret", "cannot be changed: create a new token")
			}
			if o.UserID != nil {
				if err := t.ref(ctx, "user", "users", *o.UserID); err != nil {
					return err
				}
			}
			if o.WorkerID != nil {
				if err := t.ref(ctx, "worker", "workers", *o.WorkerID); err != nil {
					return err
				}
			}
			if o.ScopeID != nil {
				if err := t.ref(ctx, "scope", "scopes", *o.ScopeID); err != nil {
					return err
				}
			}
			return nil
		},
		totals: func(ctx context.Context, t *tx, o *model.Token) ([]contribution, error) {
			return []contribution{one("tokens", Labels{
				"enabled": boolLabel(o.Enabled), "user": boolLabel(o.UserID != nil), "worker": boolLabel(o.WorkerID != nil),
			})}, nil
		},
	}
}

// CreateToken makes a token with a fresh secret from the given template
// (user, worker, scope, comment, enabled, expiry) and returns the secret
// once.
func (s *SQL) CreateToken(ctx context.Context, tmpl model.Token) (*model.NewToken, error) {
	return s.createTokenWithSecret(ctx, tmpl, NewSecret())
}

func (s *SQL) createTokenWithSecret(ctx context.Context, tmpl model.Token, secret string) (*model.NewToken, error) {
	var out *model.NewToken
	err := s.inTx(ctx, func(t *tx) error {
		var err error
		out, err = s.createTokenTx(ctx, t, tmpl, secret)
		return err
	})
	return out, err
}

func (s *SQL) createTokenTx(ctx context.Context, t *tx, tmpl model.Token, secret string) (*model.NewToken, error) {
	tok := tmpl
	tok.ID = 0
	tok.Hash = HashToken(secret)
	tok.Prefix = secret[:min(len(secret), 9)]
	tok.LastSeenAt = nil
	tb := &table[model.Token]{s, s.defs.tokens}
	if err := tb.create(ctx, t, &tok); err != nil {
		return nil, err
	}
	return &model.NewToken{Token: tok, Secret: secret}, nil
}

// deleteTokensWhere deletes the tokens of a user or worker, with their
// running totals.
func (t *tx) deleteTokensWhere(ctx context.Context, column string, id int64) error {
	tb := &table[model.Token]{t.s, t.s.defs.tokens}
	ids, err := t.ids(ctx, "SELECT id FROM tokens WHERE "+column+" = $1 ORDER BY id", id)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := tb.delete(ctx, t, id, nil); err != nil {
			return err
		}
	}
	return nil
}

// Principal is who a token speaks for.
type Principal struct {
	Token  model.Token
	User   *model.User
	Worker *model.Worker
}

// Viewer is what the principal may see.
func (p *Principal) Viewer() *Viewer {
	v := &Viewer{ScopeID: p.Token.ScopeID}
	if p.User != nil {
		v.UserID = p.User.ID
		v.Admin = p.User.IsAdmin
	} else {
		v.UserID = -1 // a worker-only token sees public workspaces
	}
	return v
}

// Authenticate resolves a token secret. It refuses unknown, disabled and
// expired tokens, and tokens of inactive users, with ErrUnauthenticated.
// It records last use at most once a minute per token.
func (s *SQL) Authenticate(ctx context.Context, secret string) (*Principal, error) {
	return s.principal(ctx, "hash = $1", HashToken(secret))
}

// principal resolves the token that cond (on the tokens table, with one
// argument) selects, with Authenticate's rules: they are the rules of
// every way in, token header and dashboard session alike.
func (s *SQL) principal(ctx context.Context, cond string, arg any) (*Principal, error) {
	tb := &table[model.Token]{s, s.defs.tokens}
	var p Principal
	err := s.readTx(ctx, func(t *tx) error {
		tok, err := tb.def.scan(t.queryRow(ctx, tb.selectSQL()+" WHERE "+cond, arg))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrUnauthenticated
		}
		if err != nil {
			return err
		}
		p.Token = *tok
		if tok.UserID != nil {
			u, err := s.defs.users.scan(t.queryRow(ctx, (&table[model.User]{s, s.defs.users}).selectSQL()+" WHERE id = $1", *tok.UserID))
			if err != nil {
				return err
			}
			p.User = u
		}
		if tok.WorkerID != nil {
			w, err := s.getWorker(ctx, t, *tok.WorkerID)
			if err != nil {
				return err
			}
			p.Worker = w
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	now := s.now()
	if !p.Token.Enabled || (p.Token.ExpiresAt != nil && now.After(*p.Token.ExpiresAt)) ||
		(p.User != nil && !p.User.Active) {
		return nil, ErrUnauthenticated
	}
	if p.Token.LastSeenAt == nil || now.Sub(*p.Token.LastSeenAt) > lastSeenGranularity {
		if _, err := s.db.ExecContext(ctx, "UPDATE tokens SET last_seen_at = $1 WHERE id = $2", toMicros(now), p.Token.ID); err != nil {
			return nil, err
		}
		p.Token.LastSeenAt = &now
	}
	return &p, nil
}
