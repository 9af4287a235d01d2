package api_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testdb"
)

// crud walks one resource through POST, GET, list, PATCH and DELETE as
// token, and returns what POST and PATCH answered.
func (e *env) crud(t *testing.T, token, collection string, create, patch map[string]any) (created, patched map[string]any) {
	t.Helper()
	base := "/api/1.0/" + collection + "/"
	r := e.do("POST", base, token, create).want(t, 201)
	created = r.obj(t)
	loc := path(base+"%d/", id(created))
	if got := r.header.Get("Location"); got != loc {
		t.Fatalf("Location %q, want %q", got, loc)
	}
	for k, v := range create {
		if _, isRef := v.(string); isRef && (k == "scope" || k == "workspace" || k == "user") {
			continue // references come back as ids
		}
		if k == "members" || k == "expiration_delay" {
			continue
		}
		if !reflect.DeepEqual(created[k], normalize(t, v)) {
			t.Fatalf("created %s = %v, want %v", k, created[k], v)
		}
	}
	shown := e.do("GET", loc, token, nil).want(t, 200).obj(t)
	delete(shown, "last_seen_at")
	delete(created, "last_seen_at")
	delete(created, "secret")
	if !reflect.DeepEqual(shown, created) {
		t.Fatalf("GET %s = %v, want %v", loc, shown, created)
	}
	list, _ := e.do("GET", base+"?limit=1000", token, nil).want(t, 200).list(t)
	if !containsID(list, id(created)) {
		t.Fatalf("list %s misses %d", base, id(created))
	}
	patched = e.do("PATCH", loc, token, patch).want(t, 200).obj(t)
	for k, v := range patch {
		if !reflect.DeepEqual(patched[k], normalize(t, v)) {
			t.Fatalf("patched %s = %v, want %v", k, patched[k], v)
		}
	}
	if e.do("GET", loc, token, nil).want(t, 200).obj(t)["created_at"] != created["created_at"] {
		t.Fatal("PATCH changed created_at")
	}
	e.do("DELETE", loc, token, nil).want(t, 204)
	e.do("GET", loc, token, nil).wantProblem(t, 404, "")
	return created, patched
}

// normalize turns a Go value into what it reads back as from JSON.
func normalize(t *testing.T, v any) any {
	t.Helper()
	var out any
	resp{body: mustJSON(t, v)}.json(t, &out)
	return out
}

func containsID(list []map[string]any, want int64) bool {
	for _, m := range list {
		if id(m) == want {
			return true
		}
	}
	return false
}

func TestCRUD(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		admin := adminSecret
		t.Run("scopes", func(t *testing.T) {
			e.crud(t, admin, "scopes", map[string]any{"name": "ubuntu", "label": "Ubuntu"}, map[string]any{"label": "Ubuntu!"})
		})
		t.Run("workspaces", func(t *testing.T) {
			c, p := e.crud(t, admin, "workspaces",
				map[string]any{"name": "new", "scope": "debian", "expiration_delay": "72h"},
				map[string]any{"public": true, "expiration_delay": nil, "name": "renamed"})
			if c["public"] != false || c["expiration_delay"] != "72h0m0s" || int64(c["scope"].(float64)) != e.ids["scope"] {
				t.Fatalf("workspace defaults: %v", c)
			}
			if p["public"] != true || p["expiration_delay"] != nil {
				t.Fatalf("workspace patch: %v", p)
			}
		})
		t.Run("users", func(t *testing.T) {
			c, _ := e.crud(t, admin, "users", map[string]any{"username": "dave", "email": "dave@example.org"},
				map[string]any{"active": false, "is_admin": true})
			if c["active"] != true || c["is_admin"] != false || c["system"] != false {
				t.Fatalf("user defaults: %v", c)
			}
		})
		t.Run("identities", func(t *testing.T) {
			c, _ := e.crud(t, admin, "identities", map[string]any{"user": "bob", "issuer": "https://sso", "subject": "b1"},
				map[string]any{"subject": "b2"})
			if int64(c["user"].(float64)) != e.ids["bob"] {
				t.Fatalf("identity user: %v", c)
			}
		})
		t.Run("groups", func(t *testing.T) {
			c, p := e.crud(t, admin, "groups", map[string]any{"name": "devs", "scope": "debian", "members": []any{"bob", e.ids["alice"]}},
				map[string]any{"members": []any{}, "ephemeral": true})
			want := []any{float64(e.ids["alice"]), float64(e.ids["bob"])}
			if !reflect.DeepEqual(c["members"], want) || len(p["members"].([]any)) != 0 {
				t.Fatalf("group members: %v then %v", c["members"], p["members"])
			}
		})
		t.Run("tokens", func(t *testing.T) {
			c, _ := e.crud(t, admin, "tokens", map[string]any{"comment": "ci", "expires_at": "2099-01-02T03:04:05Z"},
				map[string]any{"enabled": false, "comment": "old ci", "expires_at": nil})
			if int64(c["user"].(float64)) != e.ids["admin"] || c["enabled"] != true || c["worker"] != nil {
				t.Fatalf("token defaults: %v", c)
			}
			// runner tokens: a worker and no user
			r := e.do("POST", "/api/1.0/tokens/", admin, map[string]any{"worker": "runner-1"}).want(t, 201).obj(t)
			if r["user"] != nil || int64(r["worker"].(float64)) != e.ids["worker"] {
				t.Fatalf("runner token: %v", r)
			}
		})
		t.Run("tokens/secret", func(t *testing.T) {
			r := e.do("POST", "/api/1.0/tokens/", e.tok["alice"], map[string]any{"comment": "mine"}).want(t, 201).obj(t)
			secret, _ := r["secret"].(string)
			if !strings.HasPrefix(secret, "kiln_") || int64(r["user"].(float64)) != e.ids["alice"] {
				t.Fatalf("POST /tokens/ answer: %v", r)
			}
			// the new secret works, and no other answer shows a secret or hash
			e.do("GET", "/api/1.0/users/"+itoa(e.ids["alice"])+"/", secret, nil).want(t, 200)
			for _, p := range []string{"/api/1.0/tokens/", "/api/1.0/tokens/" + itoa(id(r)) + "/"} {
				body := string(e.do("GET", p, secret, nil).want(t, 200).body)
				if strings.Contains(body, secret) || strings.Contains(body, `"hash"`) || strings.Contains(body, `"secret"`) {
					t.Fatalf("GET %s leaks the secret: %s", p, body)
				}
			}
		})
		t.Run("file-stores", func(t *testing.T) {
			c, p := e.crud(t, admin, "file-stores",
				map[string]any{"name": "spare2", "backend": "Local", "configuration": map[string]any{"base_directory": t.TempDir()}, "max_size": 1000},
				map[string]any{"max_size": nil})
			if c["total_size"] != float64(0) || p["max_size"] != nil {
				t.Fatalf("file store: %v then %v", c, p)
			}
		})
		t.Run("worker-pools", func(t *testing.T) {
			c, p := e.crud(t, admin, "worker-pools",
				map[string]any{"name": "cloud", "provider": "process", "architectures": []string{"arm64"}, "backends": []string{"unshare"},
					"max_instances": 4, "min_idle": 1, "idle_timeout": "5m0s", "max_seconds_per_month": 3600},
				map[string]any{"max_seconds_per_month": nil, "settings": map[string]any{"metrics_server": "127.0.0.1:9400"}})
			if c["startup_timeout"] != "10m0s" || c["enabled"] != true || c["runtime_seconds"] != float64(0) || p["max_seconds_per_month"] != nil {
				t.Fatalf("worker pool: %v then %v", c, p)
			}
		})
		t.Run("assets", func(t *testing.T) {
			c, _ := e.crud(t, admin, "assets",
				map[string]any{"category": "test:signing-key", "workspace": "debian/priv", "data": map[string]any{"fpr": "AB"}},
				map[string]any{"data": map[string]any{"fpr": "CD"}})
			if int64(c["workspace"].(float64)) != e.ids["priv"] || int64(c["created_by"].(float64)) != e.ids["admin"] {
				t.Fatalf("asset: %v", c)
			}
			// a contributor writes in their workspace
			e.crud(t, e.tok["alice"], "assets",
				map[string]any{"category": "test:signing-key", "workspace": e.ids["priv"], "data": map[string]any{}},
				map[string]any{"data": map[string]any{"a": "b"}})
		})
		t.Run("collections", func(t *testing.T) {
			c, _ := e.crud(t, admin, "collections",
				map[string]any{"category": "debian:suite", "name": "bookworm", "workspace": e.ids["pub"]},
				map[string]any{"data": map[string]any{"x": 1.0}, "name": "trixie"})
			if c["item_count"] != float64(0) {
				t.Fatalf("collection: %v", c)
			}
			e.crud(t, e.tok["alice"], "collections",
				map[string]any{"category": "debian:suite", "name": "sid", "workspace": "debian/priv"},
				map[string]any{"data": map[string]any{"y": "z"}})
		})
		t.Run("items", func(t *testing.T) {
			coll := path("/api/1.0/collections/%d/", e.ids["coll:priv"])
			r := e.do("POST", coll+"items/", e.tok["alice"], map[string]any{"name": "hello", "category": "debian:package", "data": map[string]any{"v": "1"}}).want(t, 201)
			it := r.obj(t)
			if r.header.Get("Location") != path(coll+"items/%d/", id(it)) || it["name"] != "hello" {
				t.Fatalf("item: %v %v", r.header, it)
			}
			if n := e.do("GET", coll, admin, nil).want(t, 200).obj(t)["item_count"]; n != float64(2) {
				t.Fatalf("item_count after add = %v", n)
			}
			list, _ := e.do("GET", coll+"items/", e.tok["alice"], nil).want(t, 200).list(t)
			if !reflect.DeepEqual(ids(list), []int64{e.ids["item:priv"], id(it)}) {
				t.Fatalf("items: %v", list)
			}
			e.do("DELETE", path(coll+"items/%d/", id(it)), e.tok["alice"], nil).want(t, 204)
			e.do("DELETE", path(coll+"items/%d/", id(it)), e.tok["alice"], nil).wantProblem(t, 404, "")
			if n := e.do("GET", coll, admin, nil).want(t, 200).obj(t)["item_count"]; n != float64(1) {
				t.Fatalf("item_count after delete = %v", n)
			}
		})
		t.Run("members", func(t *testing.T) {
			ws := path("/api/1.0/workspaces/%d/members/", e.ids["priv"])
			// the owner grants bob a role, then revokes it
			r := e.do("POST", ws, e.tok["olga"], map[string]any{"user": "bob", "role": "viewer"}).want(t, 201)
			m := r.obj(t)
			if r.header.Get("Location") != path(ws+"%d/", id(m)) || m["role"] != "viewer" || int64(m["user"].(float64)) != e.ids["bob"] {
				t.Fatalf("member: %v %v", r.header, m)
			}
			e.do("GET", path("/api/1.0/workspaces/%d/", e.ids["priv"]), e.tok["bob"], nil).want(t, 200)
			g := e.do("POST", ws, admin, map[string]any{"group": "debian/team", "role": "contributor"}).want(t, 201).obj(t)
			list, _ := e.do("GET", ws, e.tok["bob"], nil).want(t, 200).list(t)
			if !reflect.DeepEqual(ids(list), []int64{e.ids["member:alice"], e.ids["member:olga"], id(m), id(g)}) {
				t.Fatalf("members: %v", list)
			}
			e.do("DELETE", path(ws+"%d/", id(m)), e.tok["olga"], nil).want(t, 204)
			e.do("DELETE", path(ws+"%d/", id(g)), admin, nil).want(t, 204)
			e.do("GET", path("/api/1.0/workspaces/%d/", e.ids["priv"]), e.tok["bob"], nil).wantProblem(t, 404, "")
		})
	})
}
