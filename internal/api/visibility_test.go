package api_test

import (
	"reflect"
	"testing"

	"github.com/kiln-build/kiln/internal/testdb"
)

// TestPrivateWorkspaceVisibility: anonymous callers and users who are not
// members see neither a private workspace nor what it holds, in lists and
// by id; its members do.
func TestPrivateWorkspaceVisibility(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		privPaths := []string{
			path("/api/1.0/workspaces/%d/", e.ids["priv"]),
			path("/api/1.0/workspaces/%d/members/", e.ids["priv"]),
			path("/api/1.0/assets/%d/", e.ids["asset:priv"]),
			path("/api/1.0/collections/%d/", e.ids["coll:priv"]),
			path("/api/1.0/collections/%d/items/", e.ids["coll:priv"]),
		}
		lists := map[string][2]int64{ // list → {public object, private object}
			"/api/1.0/workspaces/":  {e.ids["pub"], e.ids["priv"]},
			"/api/1.0/assets/":      {e.ids["asset:pub"], e.ids["asset:priv"]},
			"/api/1.0/collections/": {e.ids["coll:pub"], e.ids["coll:priv"]},
		}
		for _, who := range []string{"", "bob"} {
			name := who
			if name == "" {
				name = "anonymous"
			}
			t.Run(name, func(t *testing.T) {
				tok := e.tok[who]
				for list, objs := range lists {
					got := ids(first(e.do("GET", list, tok, nil).want(t, 200).list(t)))
					if !reflect.DeepEqual(got, []int64{objs[0]}) {
						t.Fatalf("%s %s: want only %d, got %v", name, list, objs[0], got)
					}
				}
				for _, p := range privPaths {
					e.do("GET", p, tok, nil).wantProblem(t, 404, "")
				}
				e.do("GET", path("/api/1.0/workspaces/%d/", e.ids["pub"]), tok, nil).want(t, 200)
				e.do("GET", path("/api/1.0/collections/%d/items/", e.ids["coll:pub"]), tok, nil).want(t, 200)
				// filtering by the private workspace names it as unknown
				e.do("GET", "/api/1.0/assets/?workspace=debian/priv", tok, nil).wantProblem(t, 400, "workspace")
				e.do("GET", path("/api/1.0/assets/?workspace=%d", e.ids["priv"]), tok, nil).wantProblem(t, 400, "workspace")
			})
		}
		t.Run("outsider cannot write through a reference", func(t *testing.T) {
			e.do("POST", "/api/1.0/assets/", e.tok["bob"], map[string]any{"category": "test:x", "workspace": "debian/priv"}).
				wantProblem(t, 400, "workspace")
			e.do("POST", "/api/1.0/collections/", e.tok["bob"], map[string]any{"category": "test:x", "name": "n", "workspace": e.ids["priv"]}).
				wantProblem(t, 400, "workspace")
		})
		for _, who := range []string{"alice", "olga", "admin"} {
			t.Run(who, func(t *testing.T) {
				tok := e.tok[who]
				for list, objs := range lists {
					if list != "/api/1.0/workspaces/" {
						got := ids(first(e.do("GET", list+"?workspace=debian/priv", tok, nil).want(t, 200).list(t)))
						if !reflect.DeepEqual(got, []int64{objs[1]}) {
							t.Fatalf("%s %s: want %d, got %v", who, list, objs[1], got)
						}
					}
					all := ids(first(e.do("GET", list, tok, nil).want(t, 200).list(t)))
					if !containsAll(all, objs[:]) {
						t.Fatalf("%s %s: want %v among %v", who, list, objs, all)
					}
				}
				for _, p := range privPaths {
					e.do("GET", p, tok, nil).want(t, 200)
				}
			})
		}
		t.Run("roles", func(t *testing.T) {
			// alice contributes but does not own: she cannot manage members
			e.do("POST", path("/api/1.0/workspaces/%d/members/", e.ids["priv"]), e.tok["alice"],
				map[string]any{"user": "bob", "role": "viewer"}).wantProblem(t, 403, "")
			// bob as a viewer sees the workspace but cannot write in it
			e.do("POST", path("/api/1.0/workspaces/%d/members/", e.ids["priv"]), e.tok["olga"],
				map[string]any{"user": "bob", "role": "viewer"}).want(t, 201)
			e.do("GET", path("/api/1.0/assets/%d/", e.ids["asset:priv"]), e.tok["bob"], nil).want(t, 200)
			e.do("PATCH", path("/api/1.0/assets/%d/", e.ids["asset:priv"]), e.tok["bob"], map[string]any{"data": map[string]any{}}).
				wantProblem(t, 403, "")
			e.do("POST", "/api/1.0/assets/", e.tok["bob"], map[string]any{"category": "test:x", "workspace": "debian/priv"}).
				wantProblem(t, 403, "")
		})
	})
}

func first[A, B any](a A, _ B) A { return a }

func containsAll(have, want []int64) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// TestReadRules covers who may read what beyond workspaces.
func TestReadRules(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		alice, bob := e.tok["alice"], e.tok["bob"]
		// anyone reads scopes; a bad token is refused even there
		e.do("GET", "/api/1.0/scopes/", "", nil).want(t, 200)
		r := e.do("GET", "/api/1.0/scopes/", "kiln_nope", nil)
		r.wantProblem(t, 401, "")
		if r.header.Get("WWW-Authenticate") != "Token" {
			t.Fatal("401 without WWW-Authenticate")
		}
		e.do("GET", "/api/1.0/scopes/", e.tok["disabled"], nil).wantProblem(t, 401, "")
		// runners are not users
		for _, p := range []string{"/api/1.0/scopes/", "/api/1.0/workspaces/", "/api/1.0/tokens/"} {
			e.do("GET", p, e.tok["worker"], nil).wantProblem(t, 403, "")
		}
		// users: themselves only; the list is for admins
		e.do("GET", "/api/1.0/users/", "", nil).wantProblem(t, 401, "")
		e.do("GET", "/api/1.0/users/", alice, nil).wantProblem(t, 403, "")
		e.do("GET", path("/api/1.0/users/%d/", e.ids["alice"]), alice, nil).want(t, 200)
		e.do("GET", path("/api/1.0/users/%d/", e.ids["bob"]), alice, nil).wantProblem(t, 404, "")
		users := ids(first(e.do("GET", "/api/1.0/users/", adminSecret, nil).want(t, 200).list(t)))
		if !containsAll(users, []int64{e.ids["system"], e.ids["alice"]}) {
			t.Fatalf("admins see all users, the system user included: %v", users)
		}
		// tokens and identities: one's own
		toks := ids(first(e.do("GET", "/api/1.0/tokens/", alice, nil).want(t, 200).list(t)))
		for _, id := range toks {
			m := e.do("GET", path("/api/1.0/tokens/%d/", id), alice, nil).want(t, 200).obj(t)
			if int64(m["user"].(float64)) != e.ids["alice"] {
				t.Fatalf("alice sees token %v", m)
			}
		}
		if len(toks) != 2 {
			t.Fatalf("alice has two tokens, sees %v", toks)
		}
		e.do("GET", path("/api/1.0/tokens/?user=%d", e.ids["bob"]), alice, nil).wantProblem(t, 403, "")
		e.do("GET", path("/api/1.0/tokens/%d/", e.ids["bob_token"]), alice, nil).wantProblem(t, 404, "")
		// disabling one's own token is allowed, and it stops working
		e.do("PATCH", path("/api/1.0/tokens/%d/", e.ids["bob_token"]), bob, map[string]any{"enabled": false}).want(t, 200)
		e.do("GET", "/api/1.0/scopes/", bob, nil).wantProblem(t, 401, "")
		if n := len(first(e.do("GET", "/api/1.0/identities/", alice, nil).want(t, 200).list(t))); n != 1 {
			t.Fatalf("alice has one identity, sees %d", n)
		}
		if n := len(first(e.do("GET", "/api/1.0/identities/", e.tok["olga"], nil).want(t, 200).list(t))); n != 0 {
			t.Fatalf("olga has no identity, sees %d", n)
		}
		e.do("GET", path("/api/1.0/identities/%d/", e.ids["identity"]), e.tok["olga"], nil).wantProblem(t, 404, "")
		// groups: any user; file stores: admins (configurations hold keys)
		e.do("GET", "/api/1.0/groups/", "", nil).wantProblem(t, 401, "")
		e.do("GET", "/api/1.0/groups/", alice, nil).want(t, 200)
		e.do("GET", "/api/1.0/file-stores/", alice, nil).wantProblem(t, 403, "")
		e.do("GET", path("/api/1.0/file-stores/%d/", e.ids["filestore"]), alice, nil).wantProblem(t, 403, "")
		e.do("GET", "/api/1.0/file-stores/", adminSecret, nil).want(t, 200)
	})
}

// TestScopeRestrictedToken: a token restricted to scope "other" sees only
// that scope and cannot write outside it, even an admin's.
func TestScopeRestrictedToken(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		tok := e.tok["scoped"]
		scopes := ids(first(e.do("GET", "/api/1.0/scopes/", tok, nil).want(t, 200).list(t)))
		if !reflect.DeepEqual(scopes, []int64{e.ids["scope:other"]}) {
			t.Fatalf("scopes: %v", scopes)
		}
		ws := ids(first(e.do("GET", "/api/1.0/workspaces/", tok, nil).want(t, 200).list(t)))
		if !reflect.DeepEqual(ws, []int64{e.ids["far"]}) {
			t.Fatalf("workspaces: %v", ws)
		}
		e.do("GET", path("/api/1.0/scopes/%d/", e.ids["scope"]), tok, nil).wantProblem(t, 404, "")
		e.do("GET", path("/api/1.0/assets/%d/", e.ids["asset:pub"]), tok, nil).wantProblem(t, 404, "")
		// a workspace outside the scope is as unknown to a list filter as a
		// missing one
		e.do("GET", "/api/1.0/assets/?workspace=debian/priv", tok, nil).wantProblem(t, 400, "workspace")
		e.do("GET", "/api/1.0/assets/?workspace=other/far", tok, nil).want(t, 200)
		e.do("GET", "/api/1.0/groups/", tok, nil).want(t, 200)
		for _, c := range []struct {
			path string
			body map[string]any
		}{
			{"/api/1.0/workspaces/", map[string]any{"name": "x", "scope": "debian"}},
			{"/api/1.0/scopes/", map[string]any{"name": "x"}},
			{"/api/1.0/users/", map[string]any{"username": "x"}},
			{"/api/1.0/file-stores/", map[string]any{"name": "x", "backend": "Local"}},
			{"/api/1.0/groups/", map[string]any{"name": "x", "scope": "debian"}},
			{"/api/1.0/assets/", map[string]any{"category": "test:x", "workspace": "debian/pub"}},
			{"/api/1.0/tokens/", map[string]any{"scope": "debian"}},
			{"/api/1.0/tokens/", map[string]any{"scope": nil}},
		} {
			e.do("POST", c.path, tok, c.body).wantProblem(t, 403, "")
		}
		e.do("PATCH", path("/api/1.0/workspaces/%d/", e.ids["pub"]), tok, map[string]any{"public": false}).wantProblem(t, 404, "")
		e.do("POST", "/api/1.0/workspaces/", tok, map[string]any{"name": "x", "scope": "other"}).want(t, 201)
		e.do("POST", "/api/1.0/assets/", tok, map[string]any{"category": "test:x", "workspace": "other/far"}).want(t, 201)
		nt := e.do("POST", "/api/1.0/tokens/", tok, map[string]any{"comment": "child"}).want(t, 201).obj(t)
		if int64(nt["scope"].(float64)) != e.ids["scope:other"] {
			t.Fatalf("a restricted token makes restricted tokens: %v", nt)
		}
	})
}

// TestLists covers pagination, filters and query checking.
func TestLists(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		for _, n := range []string{"a1", "a2", "a3", "a4", "a5"} {
			e.do("POST", "/api/1.0/scopes/", adminSecret, map[string]any{"name": n}).want(t, 201)
		}
		var seen []int64
		next := "/api/1.0/scopes/?limit=3"
		pages := 0
		for next != "" {
			res, nx := e.do("GET", next, "", nil).want(t, 200).list(t)
			seen = append(seen, ids(res)...)
			pages++
			next = ""
			if nx != nil {
				next = *nx
			}
		}
		if len(seen) != 7 || pages != 3 {
			t.Fatalf("walked %d pages, saw %v", pages, seen)
		}
		for i := 1; i < len(seen); i++ {
			if seen[i] <= seen[i-1] {
				t.Fatalf("ids out of order: %v", seen)
			}
		}
		res, _ := e.do("GET", "/api/1.0/scopes/?name=a3", "", nil).want(t, 200).list(t)
		if len(res) != 1 || res[0]["name"] != "a3" {
			t.Fatalf("filter by name: %v", res)
		}
		res, _ = e.do("GET", "/api/1.0/workspaces/?scope=debian&public=true", adminSecret, nil).want(t, 200).list(t)
		if !reflect.DeepEqual(ids(res), []int64{e.ids["pub"]}) {
			t.Fatalf("filter workspaces: %v", res)
		}
		res, _ = e.do("GET", path("/api/1.0/workspaces/?scope=%d", e.ids["scope:other"]), adminSecret, nil).want(t, 200).list(t)
		if !reflect.DeepEqual(ids(res), []int64{e.ids["far"]}) {
			t.Fatalf("filter workspaces by scope id: %v", res)
		}
		res, _ = e.do("GET", "/api/1.0/collections/?category=debian:suite&workspace=debian/pub", "", nil).want(t, 200).list(t)
		if !reflect.DeepEqual(ids(res), []int64{e.ids["coll:pub"]}) {
			t.Fatalf("filter collections: %v", res)
		}
		for q, field := range map[string]string{
			"limit=0": "limit", "limit=1001": "limit", "limit=x": "limit", "after=-1": "after",
			"colour=red": "colour", "name=a&name=b": "name",
		} {
			e.do("GET", "/api/1.0/scopes/?"+q, "", nil).wantProblem(t, 400, field)
		}
		e.do("GET", "/api/1.0/workspaces/?public=yes", "", nil).wantProblem(t, 400, "public")
		e.do("GET", "/api/1.0/workspaces/?scope=nope", "", nil).wantProblem(t, 400, "scope")
		e.do("GET", path("/api/1.0/scopes/%d/?x=1", e.ids["scope"]), "", nil).wantProblem(t, 400, "x")
	})
}

// TestUnmatched: paths under the prefix that no route takes are problems
// too: 404 for unknown resources, 405 with Allow for wrong methods.
func TestUnmatched(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		for _, p := range []string{"/api/1.0/nothing/", "/api/1.0/scopes/1/extra/", "/api/1.0/scopes/debian/", "/api/1.0/scopes/0/"} {
			e.do("GET", p, "", nil).wantProblem(t, 404, "")
		}
		r := e.do("PUT", "/api/1.0/scopes/", adminSecret, `{}`)
		r.wantProblem(t, 405, "")
		if r.header.Get("Allow") != "GET, POST, HEAD" {
			t.Fatalf("Allow: %q", r.header.Get("Allow"))
		}
		r = e.do("POST", path("/api/1.0/scopes/%d/", e.ids["scope"]), adminSecret, `{}`)
		r.wantProblem(t, 405, "")
		if r.header.Get("Allow") != "GET, PATCH, DELETE, HEAD" {
			t.Fatalf("Allow: %q", r.header.Get("Allow"))
		}
		e.do("DELETE", "/api/1.0/scopes/999/", adminSecret, nil).wantProblem(t, 404, "")
		e.do("PATCH", "/api/1.0/scopes/999/", adminSecret, `{}`).wantProblem(t, 404, "")
	})
}
