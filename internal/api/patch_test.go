package api_test

import (
	"reflect"
	"testing"

	"github.com/kiln-build/kiln/internal/testdb"
)

// TestPatchWhoMayChangeWhat covers the updates of identities, groups,
// tokens, assets and collections beyond TestWriteRoutesAuth's callers
// without rights: callers who may see an object but not change it, a
// scope-restricted token outside its scope, and the owners who may. Every
// refusal leaves the farm as it was.
func TestPatchWhoMayChangeWhat(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		identity := path("/api/1.0/identities/%d/", e.ids["identity"])
		group := path("/api/1.0/groups/%d/", e.ids["group"])
		aliceToken := path("/api/1.0/tokens/%d/", e.ids["alice_token"])
		pubAsset := path("/api/1.0/assets/%d/", e.ids["asset:pub"])
		privAsset := path("/api/1.0/assets/%d/", e.ids["asset:priv"])
		pubColl := path("/api/1.0/collections/%d/", e.ids["coll:pub"])
		privColl := path("/api/1.0/collections/%d/", e.ids["coll:priv"])

		before := e.snapshot(t)
		for _, c := range []struct {
			name, who, path, body string
			status                int
		}{
			// alice sees her own identity and the groups, but only admins link and group
			{"own identity", "alice", identity, `{"subject": "alice-2"}`, 403},
			{"group as a member", "alice", group, `{"members": []}`, 403},
			// bob sees public objects but is no contributor there
			{"public asset", "bob", pubAsset, `{"data": {}}`, 403},
			{"public collection", "bob", pubColl, `{"name": "mine"}`, 403},
			{"private asset", "bob", privAsset, `{"data": {}}`, 404},
			{"another's token", "bob", aliceToken, `{"comment": "mine"}`, 404},
			// olga owns priv but the public workspace is not hers to write
			{"owner elsewhere", "olga", pubColl, `{"data": {}}`, 403},
			// an admin token restricted to scope "other" stays out of "debian"
			{"restricted identity", "scoped", identity, `{"subject": "x"}`, 403},
			{"restricted group", "scoped", group, `{"ephemeral": true}`, 404},
			{"restricted token", "scoped", aliceToken, `{"enabled": false}`, 403},
			{"restricted asset", "scoped", privAsset, `{"data": {}}`, 404},
		} {
			t.Run(c.name, func(t *testing.T) {
				e.do("PATCH", c.path, e.tok[c.who], c.body).wantProblem(t, c.status, "")
			})
		}
		if after := e.snapshot(t); !reflect.DeepEqual(before, after) {
			t.Fatalf("refused updates changed state:\nbefore %v\nafter  %v", before, after)
		}

		// Those who may, do; only what the body names changes.
		a := e.do("PATCH", aliceToken, e.tok["alice"], `{"comment": "laptop", "expires_at": "2099-01-01T00:00:00Z"}`).want(t, 200).obj(t)
		if a["comment"] != "laptop" || a["expires_at"] != "2099-01-01T00:00:00Z" || a["enabled"] != true {
			t.Errorf("alice's token after PATCH: %v", a)
		}
		as := e.do("PATCH", privAsset, e.tok["alice"], `{"data": {"fpr": "CD"}}`).want(t, 200).obj(t)
		if as["category"] != "test:key" || !reflect.DeepEqual(as["data"], map[string]any{"fpr": "CD"}) {
			t.Errorf("asset after PATCH by a contributor: %v", as)
		}
		co := e.do("PATCH", privColl, e.tok["olga"], `{"name": "renamed"}`).want(t, 200).obj(t)
		if co["name"] != "renamed" || co["category"] != "debian:suite" {
			t.Errorf("collection after PATCH by its owner: %v", co)
		}
		g := e.do("PATCH", group, adminSecret, `{"name": "core", "members": ["bob", "alice"]}`).want(t, 200).obj(t)
		if g["name"] != "core" || len(g["members"].([]any)) != 2 || g["ephemeral"] != false {
			t.Errorf("group after PATCH: %v", g)
		}
		i := e.do("PATCH", identity, adminSecret, `{"user": "bob", "subject": "bob-1"}`).want(t, 200).obj(t)
		if int64(i["user"].(float64)) != e.ids["bob"] || i["subject"] != "bob-1" || i["issuer"] != "https://sso.example.org" {
			t.Errorf("identity after PATCH: %v", i)
		}
	})
}
