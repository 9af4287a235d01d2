package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Session is a dashboard sign-in: a browser's cookie that stands for the
// API token it was opened with. Its secret is shown once (OpenSession)
// and stored as a hash; CSRF is the secret the session's own forms carry.
type Session struct {
	ID        int64
	TokenID   int64
	CSRF      string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// newSessionSecret returns 256 random bits, hex-encoded. Session secrets
// have no "kiln_" prefix: they are cookies, never pasted anywhere.
func newSessionSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// OpenSession signs in with a token secret: it authenticates the secret
// with Authenticate's rules, opens a session that lasts lifetime and
// returns the principal, the session and the session's secret (shown only
// here). Sessions that have expired are deleted on the way, so the table
// holds live sessions only. A token that is refused is
// ErrUnauthenticated.
func (s *SQL) OpenSession(ctx context.Context, tokenSecret string, lifetime time.Duration) (*Principal, *Session, string, error) {
	p, err := s.Authenticate(ctx, tokenSecret)
	if err != nil {
		return nil, nil, "", err
	}
	secret := newSessionSecret()
	now := toMicros(s.now())
	sess := &Session{TokenID: p.Token.ID, CSRF: newSessionSecret(), CreatedAt: fromMicros(now),
		ExpiresAt: fromMicros(now + lifetime.Microseconds())}
	err = s.inTx(ctx, func(t *tx) error {
		if _, err := t.exec(ctx, "DELETE FROM dashboard_sessions WHERE expires_at <= $1", now); err != nil {
			return err
		}
		return t.queryRow(ctx, `INSERT INTO dashboard_sessions (hash, token_id, csrf, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5) RETURNING id`, HashToken(secret), sess.TokenID, sess.CSRF, now,
			toMicros(sess.ExpiresAt)).Scan(&sess.ID)
	})
	if err != nil {
		return nil, nil, "", fmt.Errorf("open session: %w", err)
	}
	return p, sess, secret, nil
}

// SessionPrincipal resolves a session secret to the session and to who
// its token speaks for, with Authenticate's rules (and its record of last
// use). An unknown or expired session, or one whose token is now refused,
// is ErrUnauthenticated.
func (s *SQL) SessionPrincipal(ctx context.Context, secret string) (*Principal, *Session, error) {
	var sess Session
	var created, expires int64
	err := s.db.QueryRowContext(ctx, "SELECT id, token_id, csrf, created_at, expires_at FROM dashboard_sessions WHERE hash = $1",
		HashToken(secret)).Scan(&sess.ID, &sess.TokenID, &sess.CSRF, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, nil, err
	}
	sess.CreatedAt, sess.ExpiresAt = fromMicros(created), fromMicros(expires)
	if !s.now().Before(sess.ExpiresAt) {
		return nil, nil, ErrUnauthenticated
	}
	p, err := s.principal(ctx, "id = $1", sess.TokenID)
	if err != nil {
		return nil, nil, err
	}
	return p, &sess, nil
}

// CloseSession deletes the session of secret, if it exists: signing out.
func (s *SQL) CloseSession(ctx context.Context, secret string) error {
	return s.inTx(ctx, func(t *tx) error {
		_, err := t.exec(ctx, "DELETE FROM dashboard_sessions WHERE hash = $1", HashToken(secret))
		return err
	})
}
