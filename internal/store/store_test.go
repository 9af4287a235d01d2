package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// open returns a migrated store on dsn, closed when the test ends.
func open(t *testing.T, dsn string) *store.SQL {
	t.Helper()
	s, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func fieldError(t *testing.T, err error, field string, kind store.ErrorKind) {
	t.Helper()
	var fe *store.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("want a FieldError on %q, got %v", field, err)
	}
	if fe.Field != field || fe.Kind != kind {
		t.Fatalf("want FieldError on %q (kind %d), got %q (kind %d): %v", field, kind, fe.Field, fe.Kind, fe)
	}
}

func TestMigrateTwice(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		open(t, dsn).Close()
		open(t, dsn) // second start finds the schema current
	})
}

func TestScopesAndWorkspaces(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		s := open(t, dsn)
		sc := &model.Scope{Name: "debian", Label: "Debian"}
		if err := s.Scopes().Create(ctx, sc); err != nil {
			t.Fatal(err)
		}
		if sc.ID == 0 || sc.CreatedAt.IsZero() {
			t.Fatalf("create did not set id and time: %+v", sc)
		}
		fieldError(t, s.Scopes().Create(ctx, &model.Scope{Name: "debian"}), "name", store.Conflict)
		fieldError(t, s.Scopes().Create(ctx, &model.Scope{Name: "bad name"}), "name", store.Invalid)

		got, err := s.Scopes().Lookup(ctx, "debian", nil)
		if err != nil || got.ID != sc.ID {
			t.Fatalf("lookup by name: %v %+v", err, got)
		}
		pub := &model.Workspace{Name: "main", ScopeID: sc.ID, Public: true}
		priv := &model.Workspace{Name: "embargoed", ScopeID: sc.ID}
		for _, w := range []*model.Workspace{pub, priv} {
			if err := s.Workspaces().Create(ctx, w); err != nil {
				t.Fatal(err)
			}
		}
		fieldError(t, s.Workspaces().Create(ctx, &model.Workspace{Name: "x", ScopeID: 999}), "scope", store.Invalid)
		fieldError(t, s.Workspaces().Create(ctx, &model.Workspace{Name: "main", ScopeID: sc.ID}), "name", store.Conflict)

		u := &model.User{Username: "alice", Active: true}
		if err := s.Users().Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		alice := &store.Viewer{UserID: u.ID}
		list, err := s.Workspaces().List(ctx, store.Query{Viewer: alice})
		if err != nil || len(list) != 1 || list[0].ID != pub.ID {
			t.Fatalf("alice should see only the public workspace: %v %+v", err, list)
		}
		if _, err := s.Workspaces().Get(ctx, priv.ID, alice); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("private workspace visible to non-member: %v", err)
		}
		g := &model.Group{Name: "devs", ScopeID: sc.ID, Members: []int64{u.ID}}
		if err := s.Groups().Create(ctx, g); err != nil {
			t.Fatal(err)
		}
		m := &model.WorkspaceMember{WorkspaceID: priv.ID, GroupID: &g.ID, Role: model.RoleContributor}
		if err := s.WorkspaceMembers().Create(ctx, m); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Workspaces().Get(ctx, priv.ID, alice); err != nil {
			t.Fatalf("group member cannot see private workspace: %v", err)
		}
		role, ok, err := s.WorkspaceRole(ctx, u.ID, priv.ID)
		if err != nil || !ok || role != model.RoleContributor {
			t.Fatalf("role: %v %v %v", role, ok, err)
		}
		// scope still has workspaces
		fieldError(t, s.Scopes().Delete(ctx, sc.ID, nil), "", store.Conflict)

		upd, err := s.Workspaces().Update(ctx, priv.ID, nil, func(w *model.Workspace) error { w.Public = true; return nil })
		if err != nil || !upd.Public {
			t.Fatalf("update: %v %+v", err, upd)
		}
		if _, err := s.Workspaces().Update(ctx, priv.ID, nil, func(w *model.Workspace) error { w.Name = "main"; return nil }); err == nil {
			t.Fatal("rename onto an existing name succeeded")
		}
	})
}

func TestTokens(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		s := open(t, dsn)
		ok, err := s.Bootstrap(ctx, "kiln_secret-bootstrap", t.TempDir())
		if err != nil || !ok {
			t.Fatalf("bootstrap: %v %v", ok, err)
		}
		if again, err := s.Bootstrap(ctx, "other", ""); err != nil || again {
			t.Fatalf("second bootstrap changed something: %v %v", again, err)
		}
		p, err := s.Authenticate(ctx, "kiln_secret-bootstrap")
		if err != nil || p.User == nil || !p.User.IsAdmin {
			t.Fatalf("authenticate admin: %v %+v", err, p)
		}
		if _, err := s.Authenticate(ctx, "wrong"); !errors.Is(err, store.ErrUnauthenticated) {
			t.Fatalf("wrong secret: %v", err)
		}
		nt, err := s.CreateToken(ctx, model.Token{UserID: &p.User.ID, Enabled: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, nt.Secret); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Tokens().Update(ctx, nt.ID, nil, func(tk *model.Token) error { tk.Enabled = false; return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(ctx, nt.Secret); !errors.Is(err, store.ErrUnauthenticated) {
			t.Fatalf("disabled token accepted: %v", err)
		}
	})
}
