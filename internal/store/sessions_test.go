package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestSessionsFollowTheirToken: a session answers for its token as long as
// the token itself would authenticate, and not a moment longer; signing
// out, expiry, a disabled token, an inactive user and a deleted token each
// end it.
func TestSessionsFollowTheirToken(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		s := open(t, dsn)
		now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
		s.SetClock(func() time.Time { return now })
		u := &model.User{Username: "alice", Active: true}
		must(t, s.Users().Create(ctx, u))
		open := func() (*store.Session, string) {
			t.Helper()
			tok, err := s.CreateToken(ctx, model.Token{UserID: &u.ID, Enabled: true})
			must(t, err)
			p, sess, secret, err := s.OpenSession(ctx, tok.Secret, time.Hour)
			must(t, err)
			if p.User == nil || p.User.ID != u.ID || sess.TokenID != tok.ID || secret == "" || sess.CSRF == "" || secret == sess.CSRF {
				t.Fatalf("session %+v for %+v", sess, p)
			}
			return sess, secret
		}
		ended := func(secret, why string) {
			t.Helper()
			if _, _, err := s.SessionPrincipal(ctx, secret); !errors.Is(err, store.ErrUnauthenticated) {
				t.Fatalf("%s: the session still answers (%v)", why, err)
			}
		}

		if _, _, _, err := s.OpenSession(ctx, "kiln_not_a_token", time.Hour); !errors.Is(err, store.ErrUnauthenticated) {
			t.Fatalf("a session opened with an unknown token: %v", err)
		}
		sess, secret := open()
		p, got, err := s.SessionPrincipal(ctx, secret)
		must(t, err)
		if p.User.ID != u.ID || got.ID != sess.ID || got.CSRF != sess.CSRF {
			t.Fatalf("session %+v of %+v", got, p)
		}
		ended(sess.CSRF, "the CSRF secret is no session secret")
		must(t, s.CloseSession(ctx, secret))
		ended(secret, "signed out")

		_, secret = open()
		now = now.Add(time.Hour)
		ended(secret, "expired")

		sess, secret = open()
		_, err = s.Tokens().Update(ctx, sess.TokenID, nil, func(tk *model.Token) error { tk.Enabled = false; return nil })
		must(t, err)
		ended(secret, "its token disabled")

		sess, secret = open()
		must(t, s.Tokens().Delete(ctx, sess.TokenID, nil))
		ended(secret, "its token deleted")

		_, secret = open()
		_, err = s.Users().Update(ctx, u.ID, nil, func(x *model.User) error { x.Active = false; return nil })
		must(t, err)
		ended(secret, "its user inactive")
	})
}
