package api

import (
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

type tokenInput struct {
	User      nullable[ref]       `json:"user"`
	Worker    nullable[ref]       `json:"worker"`
	Scope     nullable[ref]       `json:"scope"`
	Comment   *string             `json:"comment"`
	Enabled   *bool               `json:"enabled"`
	ExpiresAt nullable[timestamp] `json:"expires_at"`
}

// newToken turns input into a token to create. The user defaults to the
// caller unless a worker is given; non-admins may create tokens only for
// themselves and never for runners. A scope-restricted caller creates
// tokens restricted to the same scope: a token never widens what its
// creator can reach.
func (in *tokenInput) newToken(c *call) (*model.Token, error) {
	t := &model.Token{Enabled: true}
	switch {
	case in.User.set && !in.User.null:
		u, err := c.userRef("user", in.User.value)
		if err != nil {
			return nil, err
		}
		t.UserID = &u.ID
	case !in.User.set && !(in.Worker.set && !in.Worker.null):
		id := c.user().ID
		t.UserID = &id
	}
	if in.Worker.set && !in.Worker.null {
		w, err := c.workerRef("worker", in.Worker.value)
		if err != nil {
			return nil, err
		}
		t.WorkerID = &w.ID
	}
	if t.UserID == nil && t.WorkerID == nil {
		return nil, invalidField("user", "a token needs a user or a worker")
	}
	if !c.isAdmin() && (t.WorkerID != nil || !c.isSelf(t.UserID)) {
		return nil, forbidden("you may create tokens only for yourself; runner tokens are created by admins")
	}
	t.ScopeID = c.restriction()
	switch {
	case in.Scope.set && in.Scope.null:
		t.ScopeID = nil
	case in.Scope.set:
		s, err := c.scopeRef("scope", in.Scope.value)
		if err != nil {
			return nil, err
		}
		t.ScopeID = &s.ID
	}
	if r := c.restriction(); r != nil && (t.ScopeID == nil || *t.ScopeID != *r) {
		return nil, forbidden("this token is restricted to scope %d and can only create tokens restricted to it", *r)
	}
	set(&t.Comment, in.Comment)
	set(&t.Enabled, in.Enabled)
	if in.ExpiresAt.set && !in.ExpiresAt.null {
		exp := time.Time(in.ExpiresAt.value)
		if !exp.After(time.Now()) {
			return nil, invalidField("expires_at", "%q is in the past", "expires_at")
		}
		t.ExpiresAt = &exp
	}
	return t, nil
}

// change is a PATCH: who and what a token speaks for is fixed at creation
// (create a new token instead); its comment, state and expiry may change,
// the expiry to a time to come or to none.
func (in *tokenInput) change(c *call) (func(*model.Token) error, error) {
	for _, f := range []struct {
		name  string
		given bool
	}{{"scope", in.Scope.set}, {"user", in.User.set}, {"worker", in.Worker.set}} {
		if f.given {
			return nil, invalidField(f.name, "%q cannot be changed: create a new token instead", f.name)
		}
	}
	if in.ExpiresAt.set && !in.ExpiresAt.null && !time.Time(in.ExpiresAt.value).After(time.Now()) {
		return nil, invalidField("expires_at", "%q is in the past: to stop a token now, disable it (enabled: false)", "expires_at")
	}
	return func(t *model.Token) error {
		set(&t.Comment, in.Comment)
		set(&t.Enabled, in.Enabled)
		if in.ExpiresAt.set {
			t.ExpiresAt = nil
			if !in.ExpiresAt.null {
				exp := time.Time(in.ExpiresAt.value)
				t.ExpiresAt = &exp
			}
		}
		return nil
	}, nil
}

// tokenRoutes: users read, change and delete their own tokens and create
// tokens for themselves; admins manage all tokens. The secret is in the
// answer to POST only; no answer ever carries the hash.
func (a *API) tokenRoutes() []Route {
	return (&resource[model.Token, tokenInput]{
		a: a, name: "token", path: "tokens", table: a.st.Tokens(), readOnly: []string{"secret", "hash"},
		id: func(t *model.Token) int64 { return t.ID },
		filters: map[string]filterFunc{
			"user":    refFilter((*call).userRef, func(u *model.User) int64 { return u.ID }),
			"worker":  refFilter((*call).workerRef, func(w *model.Worker) int64 { return w.ID }),
			"enabled": boolFilter,
		},
		read:    (*call).requireUser,
		narrow:  ownOnly,
		visible: func(c *call, t *model.Token) bool { return c.isAdmin() || c.isSelf(t.UserID) },
		write:   (*call).requireUser,
		create:  func(c *call, in *tokenInput) (*model.Token, error) { return in.newToken(c) },
		insert: func(c *call, t *model.Token) (int64, any, error) {
			nt, err := c.a.st.CreateToken(c.ctx(), *t)
			if err != nil {
				return 0, nil, err
			}
			return nt.ID, nt, nil
		},
		allow: func(c *call, t *model.Token) error {
			if r := c.restriction(); r != nil && (t.ScopeID == nil || *t.ScopeID != *r) {
				return forbidden("this token is restricted to scope %d and can only change tokens restricted to it", *r)
			}
			return nil
		},
		update: func(c *call, in *tokenInput) (func(*model.Token) error, error) { return in.change(c) },
	}).routes()
}
