package api_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testdb"
)

// snapshot reads every list of the API as admin, so that a test can show
// that refused requests changed nothing. last_seen_at moves with
// authentication alone and is left out.
func (e *env) snapshot(t *testing.T) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, pattern := range e.routes("GET") {
		if strings.HasSuffix(pattern, "/{id}/{$}") {
			continue // items are in their lists
		}
		if strings.Contains(pattern, "{path...}") || strings.HasSuffix(pattern, "/logs/{$}") || strings.HasSuffix(pattern, "/connect/{$}") {
			continue // file contents, logs and the runner socket are no lists
		}
		if strings.HasSuffix(pattern, "/statistics/{$}") {
			// figures, not a list: the whole answer is the state
			var figures map[string]any
			e.do("GET", e.pathFor(pattern), adminSecret, nil).want(t, 200).json(t, &figures)
			out[pattern] = figures
			continue
		}
		p := e.pathFor(pattern) + "?limit=1000"
		var page struct {
			Results []map[string]any `json:"results"`
		}
		e.do("GET", p, adminSecret, nil).want(t, 200).json(t, &page)
		for _, m := range page.Results {
			delete(m, "last_seen_at")
		}
		out[p] = page.Results
	}
	return out
}

// TestBadInputEveryBody sends the same broken bodies to every POST and
// PATCH route, found through Routes() so that new routes are covered.
func TestBadInputEveryBody(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		before := e.snapshot(t)
		huge := `{"name": "` + strings.Repeat("x", 70<<10) + `"}`
		for _, pattern := range e.routes("POST", "PATCH") {
			method, _, _ := strings.Cut(pattern, " ")
			p := e.pathFor(pattern)
			t.Run(pattern, func(t *testing.T) {
				e.do(method, p, adminSecret, `{"bogus_field": 1}`).wantProblem(t, 400, "bogus_field")
				e.do(method, p, adminSecret, `{"id": 5}`).wantProblem(t, 400, "id")
				e.do(method, p, adminSecret, `{"name": `).wantProblem(t, 400, "")
				e.do(method, p, adminSecret, `{"a": 1} {"b": 2}`).wantProblem(t, 400, "")
				e.do(method, p, adminSecret, `[1, 2]`).wantProblem(t, 400, "")
				e.do(method, p, adminSecret, `null`).wantProblem(t, 400, "")
				e.do(method, p, adminSecret, ``).wantProblem(t, 400, "")
				e.do(method, p, adminSecret, huge).wantProblem(t, 413, "")
				e.doCT(method, p, adminSecret, "text/plain", `{}`).wantProblem(t, 415, "")
				e.doCT(method, p, adminSecret, "application/x-www-form-urlencoded", `name=x`).wantProblem(t, 415, "")
				e.do(method, p+"?dry_run=1", adminSecret, `{}`).wantProblem(t, 400, "dry_run")
			})
		}
		if after := e.snapshot(t); !reflect.DeepEqual(before, after) {
			t.Fatalf("refused requests changed state:\nbefore %v\nafter  %v", before, after)
		}
	})
}

// badCase is one refused request and the problem it must produce.
type badCase struct {
	method, path, body string
	status             int
	field              string
	detail             string // a word the detail must contain
}

// TestBadInputPerResource sends each resource the mistakes that are its
// own: wrong types, duplicate names, missing references.
func TestBadInputPerResource(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		before := e.snapshot(t)
		priv, pub := itoa(e.ids["priv"]), itoa(e.ids["pub"])
		members := "/api/1.0/workspaces/" + priv + "/members/"
		items := "/api/1.0/collections/" + itoa(e.ids["coll:priv"]) + "/items/"
		cases := map[string][]badCase{
			"scopes": {
				{"POST", "/api/1.0/scopes/", `{"name": 5}`, 400, "name", "string"},
				{"POST", "/api/1.0/scopes/", `{"name": "debian"}`, 409, "name", "already exists"},
				{"POST", "/api/1.0/scopes/", `{"name": "has space"}`, 400, "name", "valid name"},
				{"POST", "/api/1.0/scopes/", `{"name": null}`, 400, "name", "null"},
				{"POST", "/api/1.0/scopes/", `{"created_at": "2020-01-01T00:00:00Z"}`, 400, "created_at", "read-only"},
				{"PATCH", "/api/1.0/scopes/" + itoa(e.ids["scope"]) + "/", `{"name": "other"}`, 409, "name", "already exists"},
				{"PATCH", "/api/1.0/scopes/" + itoa(e.ids["scope"]) + "/", `{"label": ["x"]}`, 400, "label", "array"},
			},
			"workspaces": {
				{"POST", "/api/1.0/workspaces/", `{"name": "x", "scope": 999}`, 400, "scope", "999"},
				{"POST", "/api/1.0/workspaces/", `{"name": "x", "scope": "nope"}`, 400, "scope", "nope"},
				{"POST", "/api/1.0/workspaces/", `{"name": "x"}`, 400, "scope", "required"},
				{"POST", "/api/1.0/workspaces/", `{"name": "pub", "scope": "debian"}`, 409, "name", "already exists"},
				{"POST", "/api/1.0/workspaces/", `{"name": "x", "scope": "debian", "public": "yes"}`, 400, "public", "boolean"},
				{"POST", "/api/1.0/workspaces/", `{"name": "x", "scope": "debian", "expiration_delay": "soon"}`, 400, "expiration_delay", "duration"},
				{"POST", "/api/1.0/workspaces/", `{"name": "x", "scope": true}`, 400, "scope", "id"},
				{"PATCH", "/api/1.0/workspaces/" + priv + "/", `{"scope": "other"}`, 400, "scope", "another scope"},
				{"PATCH", "/api/1.0/workspaces/" + priv + "/", `{"name": "pub"}`, 409, "name", "already exists"},
			},
			"users": {
				{"POST", "/api/1.0/users/", `{"username": "alice"}`, 409, "username", "already exists"},
				{"POST", "/api/1.0/users/", `{"username": "x", "is_admin": "yes"}`, 400, "is_admin", "boolean"},
				{"POST", "/api/1.0/users/", `{"username": "x", "email": "not an address"}`, 400, "email", "e-mail"},
				{"POST", "/api/1.0/users/", `{"username": "x", "system": true}`, 400, "system", "read-only"},
				{"POST", "/api/1.0/users/", `{"email": "x@example.org"}`, 400, "username", "required"},
				{"PATCH", "/api/1.0/users/" + itoa(e.ids["bob"]) + "/", `{"active": 1}`, 400, "active", "boolean"},
				{"PATCH", "/api/1.0/users/" + itoa(e.ids["bob"]) + "/", `{"username": "alice"}`, 409, "username", "already exists"},
				{"PATCH", "/api/1.0/users/" + itoa(e.ids["system"]) + "/", `{"email": "a@b.c"}`, 403, "", "system"},
				{"DELETE", "/api/1.0/users/" + itoa(e.ids["system"]) + "/", ``, 403, "", "system"},
			},
			"identities": {
				{"POST", "/api/1.0/identities/", `{"user": 999, "issuer": "i", "subject": "s"}`, 400, "user", "999"},
				{"POST", "/api/1.0/identities/", `{"user": "nobody", "issuer": "i", "subject": "s"}`, 400, "user", "nobody"},
				{"POST", "/api/1.0/identities/", `{"user": "bob", "issuer": 1, "subject": "s"}`, 400, "issuer", "string"},
				{"POST", "/api/1.0/identities/", `{"user": "bob", "issuer": "https://sso.example.org", "subject": "alice-1"}`, 409, "subject", "already linked"},
				{"POST", "/api/1.0/identities/", `{"issuer": "i", "subject": "s"}`, 400, "user", "required"},
				{"PATCH", "/api/1.0/identities/" + itoa(e.ids["identity"]) + "/", `{"user": "nobody"}`, 400, "user", "nobody"},
				{"PATCH", "/api/1.0/identities/" + itoa(e.ids["identity"]) + "/", `{"subject": 5}`, 400, "subject", "string"},
				{"PATCH", "/api/1.0/identities/" + itoa(e.ids["identity"]) + "/", `{"subject": ""}`, 400, "subject", "required"},
			},
			"groups": {
				{"POST", "/api/1.0/groups/", `{"name": "team", "scope": "debian"}`, 409, "name", "already exists"},
				{"POST", "/api/1.0/groups/", `{"name": "g", "scope": 999}`, 400, "scope", "999"},
				{"POST", "/api/1.0/groups/", `{"name": "g", "scope": "debian", "ephemeral": 1}`, 400, "ephemeral", "boolean"},
				{"POST", "/api/1.0/groups/", `{"name": "g", "scope": "debian", "members": ["nobody"]}`, 400, "members", "nobody"},
				{"POST", "/api/1.0/groups/", `{"name": "g", "scope": "debian", "members": [1.5]}`, 400, "members", "id"},
				{"POST", "/api/1.0/groups/", `{"name": "g", "scope": "debian", "members": "alice"}`, 400, "members", "array"},
				{"POST", "/api/1.0/groups/", `{"name": "g", "scope": "debian", "members": ["alice", "alice"]}`, 400, "members", "twice"},
				{"PATCH", "/api/1.0/groups/" + itoa(e.ids["group"]) + "/", `{"members": ["nobody"]}`, 400, "members", "nobody"},
				{"PATCH", "/api/1.0/groups/" + itoa(e.ids["group"]) + "/", `{"members": ["bob", "bob"]}`, 400, "members", "twice"},
				{"PATCH", "/api/1.0/groups/" + itoa(e.ids["group"]) + "/", `{"scope": "other"}`, 400, "scope", "another scope"},
				{"PATCH", "/api/1.0/groups/" + itoa(e.ids["group"]) + "/", `{"ephemeral": "yes"}`, 400, "ephemeral", "boolean"},
				{"PATCH", "/api/1.0/groups/" + itoa(e.ids["group"]) + "/", `{"name": "has space"}`, 400, "name", "valid name"},
			},
			"members": {
				{"POST", members, `{"user": "alice", "role": "viewer"}`, 409, "user", "already a member"},
				{"POST", members, `{"user": 999, "role": "viewer"}`, 400, "user", "999"},
				{"POST", members, `{"group": "debian/nope", "role": "viewer"}`, 400, "group", "nope"},
				{"POST", members, `{"group": "nope", "role": "viewer"}`, 400, "group", "scope/name"},
				{"POST", members, `{"user": "bob", "role": "king"}`, 400, "role", "not a role"},
				{"POST", members, `{"user": "bob", "role": 3}`, 400, "role", "string"},
				{"POST", members, `{"user": "bob"}`, 400, "role", "required"},
				{"POST", members, `{"user": "bob", "group": "debian/team", "role": "viewer"}`, 400, "user", "exactly one"},
				{"POST", members, `{"workspace": 1, "user": "bob", "role": "viewer"}`, 400, "workspace", "read-only"},
				{"DELETE", members + "999/", ``, 404, "", "999"},
			},
			"tokens": {
				{"POST", "/api/1.0/tokens/", `{"scope": 999}`, 400, "scope", "999"},
				{"POST", "/api/1.0/tokens/", `{"user": 999}`, 400, "user", "999"},
				{"POST", "/api/1.0/tokens/", `{"worker": "nope"}`, 400, "worker", "nope"},
				{"POST", "/api/1.0/tokens/", `{"enabled": "no"}`, 400, "enabled", "boolean"},
				{"POST", "/api/1.0/tokens/", `{"secret": "kiln_mine"}`, 400, "secret", "read-only"},
				{"POST", "/api/1.0/tokens/", `{"hash": "00"}`, 400, "hash", "read-only"},
				{"POST", "/api/1.0/tokens/", `{"expires_at": "tomorrow"}`, 400, "expires_at", "RFC 3339"},
				{"POST", "/api/1.0/tokens/", `{"expires_at": "2001-01-01T00:00:00Z"}`, 400, "expires_at", "past"},
				{"POST", "/api/1.0/tokens/", `{"user": null}`, 400, "user", "user or a worker"},
				{"PATCH", "/api/1.0/tokens/" + itoa(e.ids["alice_token"]) + "/", `{"user": "bob"}`, 400, "user", "cannot be changed"},
				{"PATCH", "/api/1.0/tokens/" + itoa(e.ids["alice_token"]) + "/", `{"comment": 3}`, 400, "comment", "string"},
				{"PATCH", "/api/1.0/tokens/" + itoa(e.ids["alice_token"]) + "/", `{"expires_at": "2001-01-01T00:00:00Z"}`, 400, "expires_at", "past"},
				{"PATCH", "/api/1.0/tokens/" + itoa(e.ids["alice_token"]) + "/", `{"expires_at": "soon"}`, 400, "expires_at", "RFC 3339"},
				{"PATCH", "/api/1.0/tokens/" + itoa(e.ids["alice_token"]) + "/", `{"scope": null}`, 400, "scope", "cannot be changed"},
			},
			"worker-pools": {
				{"POST", "/api/1.0/worker-pools/", `{"name": "x", "architectures": ["amd64"], "max_instances": 1}`, 400, "provider", "required"},
				{"POST", "/api/1.0/worker-pools/", `{"name": "x", "provider": "static", "architectures": ["amd64"], "max_instances": 1}`, 400, "provider", "process or exec"},
				{"POST", "/api/1.0/worker-pools/", `{"name": "spare", "provider": "process", "architectures": ["amd64"], "max_instances": 1}`, 409, "name", "already exists"},
				{"POST", "/api/1.0/worker-pools/", `{"name": "x", "provider": "process", "max_instances": 1}`, 400, "architectures", "required"},
				{"POST", "/api/1.0/worker-pools/", `{"name": "x", "provider": "process", "architectures": ["amd64"], "max_instances": 0}`, 400, "max_instances", "at least 1"},
				{"POST", "/api/1.0/worker-pools/", `{"name": "x", "provider": "process", "architectures": ["amd64"], "max_instances": 1, "concurrent": 500}`, 400, "concurrent", "1 to 256"},
				{"POST", "/api/1.0/worker-pools/", `{"name": "x", "provider": "process", "architectures": ["amd64"], "max_instances": 1, "idle_timeout": "soon"}`, 400, "idle_timeout", "duration"},
				{"POST", "/api/1.0/worker-pools/", `{"name": "x", "provider": "process", "architectures": "amd64", "max_instances": 1}`, 400, "architectures", "array"},
				{"POST", "/api/1.0/worker-pools/", `{"name": "x", "provider": "exec", "architectures": ["amd64"], "max_instances": 1}`, 400, "settings.command", "required"},
				{"POST", "/api/1.0/worker-pools/", `{"name": "x", "provider": "exec", "architectures": ["amd64"], "max_instances": 1, "settings": {"command": "/bin/sh", "timeout": "never"}}`, 400, "settings.timeout", "duration"},
				{"POST", "/api/1.0/worker-pools/", `{"name": "x", "provider": "process", "architectures": ["amd64"], "max_instances": 1, "settings": {"metrics_server": "127.0.0.1:0"}}`, 400, "settings.metrics_server", "port 0"},
				{"POST", "/api/1.0/worker-pools/", `{"name": "x", "provider": "process", "architectures": ["amd64"], "max_instances": 1, "runtime_seconds": 5}`, 400, "runtime_seconds", "read-only"},
				{"POST", "/api/1.0/worker-pools/", `{"name": "x", "provider": "process", "architectures": ["amd64"], "max_instances": 1, "status": {}}`, 400, "status", "read-only"},
				{"PATCH", "/api/1.0/worker-pools/" + itoa(e.ids["pool"]) + "/", `{"min_idle": 5}`, 400, "min_idle", "max_instances"},
				{"PATCH", "/api/1.0/worker-pools/" + itoa(e.ids["pool"]) + "/", `{"max_seconds_per_month": 0}`, 400, "max_seconds_per_month", "positive"},
				{"PATCH", "/api/1.0/worker-pools/" + itoa(e.ids["pool"]) + "/", `{"provider": "exec"}`, 400, "settings.command", "required"},
				{"GET", "/api/1.0/worker-pools/" + itoa(e.ids["pool"]) + "/instances/?all=yes", ``, 400, "all", "true or false"},
			},
			"file-stores": {
				{"POST", "/api/1.0/file-stores/", `{"name": "default", "backend": "Local", "configuration": {"base_directory": ` + jsonString(t.TempDir()) + `}}`, 409, "name", "already exists"},
				{"POST", "/api/1.0/file-stores/", `{"name": "x", "backend": "Local"}`, 400, "configuration.base_directory", "needs a base_directory"},
				{"POST", "/api/1.0/file-stores/", `{"name": "x", "backend": "Local", "configuration": {"base_directory": "rel"}}`, 400, "configuration.base_directory", "absolute"},
				{"POST", "/api/1.0/file-stores/", `{"name": "x", "backend": "S3", "configuration": {"endpoint": "https://s3.example.org", "bucket": "kiln", "secret_access_key": "x"}}`, 400, "configuration.secret_access_key", "AWS_SECRET_ACCESS_KEY"},
				{"POST", "/api/1.0/file-stores/", `{"name": "x", "backend": "S3", "configuration": {"endpoint": "https://s3.example.org", "bucket": "kiln", "bukcet": "x"}}`, 400, "configuration.bukcet", "unknown key"},
				{"POST", "/api/1.0/file-stores/", `{"name": "x", "backend": "S3", "configuration": {"endpoint": "s3.example.org", "bucket": "kiln"}}`, 400, "configuration.endpoint", "https://"},
				{"POST", "/api/1.0/file-stores/", `{"name": "x", "backend": "S3", "default": "yes"}`, 400, "default", "boolean"},
				{"PATCH", "/api/1.0/file-stores/" + itoa(e.ids["filestore"]) + "/", `{"configuration": {"base_directory": "/x", "password": "p"}}`, 400, "configuration.password", "never stores"},
				{"POST", "/api/1.0/file-stores/", `{"name": "x", "backend": "Floppy"}`, 400, "backend", "Local or S3"},
				{"POST", "/api/1.0/file-stores/", `{"name": "x", "backend": "Local", "max_size": "big"}`, 400, "max_size", "integer"},
				{"POST", "/api/1.0/file-stores/", `{"name": "x", "backend": "Local", "total_size": 0}`, 400, "total_size", "read-only"},
				{"POST", "/api/1.0/file-stores/", `{"name": "x", "backend": "Local", "configuration": [1]}`, 400, "configuration", "object"},
				{"PATCH", "/api/1.0/file-stores/" + itoa(e.ids["filestore"]) + "/", `{"max_size": -1}`, 400, "max_size", "negative"},
			},
			"assets": {
				{"POST", "/api/1.0/assets/", `{"category": "test:x", "workspace": 999}`, 400, "workspace", "999"},
				{"POST", "/api/1.0/assets/", `{"category": "test:x", "workspace": "debian/nope"}`, 400, "workspace", "nope"},
				{"POST", "/api/1.0/assets/", `{"category": "test:x", "workspace": "nope/pub"}`, 400, "workspace", "nope"},
				{"POST", "/api/1.0/assets/", `{"category": "test:x"}`, 400, "workspace", "required"},
				{"POST", "/api/1.0/assets/", `{"category": 7, "workspace": ` + pub + `}`, 400, "category", "string"},
				{"POST", "/api/1.0/assets/", `{"category": "Bad Category", "workspace": ` + pub + `}`, 400, "category", "category"},
				{"POST", "/api/1.0/assets/", `{"category": "test:x", "workspace": ` + pub + `, "data": "x"}`, 400, "data", "object"},
				{"POST", "/api/1.0/assets/", `{"category": "test:x", "workspace": ` + pub + `, "created_by": 1}`, 400, "created_by", "read-only"},
				{"PATCH", "/api/1.0/assets/" + itoa(e.ids["asset:priv"]) + "/", `{"workspace": ` + pub + `}`, 400, "workspace", "cannot be changed"},
				{"PATCH", "/api/1.0/assets/" + itoa(e.ids["asset:priv"]) + "/", `{"category": "test:other"}`, 400, "category", "cannot be changed"},
				{"PATCH", "/api/1.0/assets/" + itoa(e.ids["asset:priv"]) + "/", `{"data": [1]}`, 400, "data", "object"},
				{"PATCH", "/api/1.0/assets/" + itoa(e.ids["asset:priv"]) + "/", `{"workspace": "debian/nope"}`, 400, "workspace", "nope"},
			},
			"collections": {
				{"POST", "/api/1.0/collections/", `{"category": "debian:suite", "name": "suite-pub", "workspace": ` + pub + `}`, 409, "name", "already exists"},
				{"POST", "/api/1.0/collections/", `{"category": "debian:suite", "name": "x", "workspace": 999}`, 400, "workspace", "999"},
				{"POST", "/api/1.0/collections/", `{"category": "debian:suite", "name": {}, "workspace": ` + pub + `}`, 400, "name", "string"},
				{"POST", "/api/1.0/collections/", `{"category": "debian:suite", "name": "x", "workspace": ` + pub + `, "item_count": 3}`, 400, "item_count", "read-only"},
				{"PATCH", "/api/1.0/collections/" + itoa(e.ids["coll:priv"]) + "/", `{"name": false}`, 400, "name", "string"},
				{"PATCH", "/api/1.0/collections/" + itoa(e.ids["coll:priv"]) + "/", `{"category": "debian:other"}`, 400, "category", "cannot be changed"},
				{"PATCH", "/api/1.0/collections/" + itoa(e.ids["coll:priv"]) + "/", `{"workspace": ` + pub + `}`, 400, "workspace", "cannot be changed"},
				{"PATCH", "/api/1.0/collections/" + itoa(e.ids["coll:priv"]) + "/", `{"item_count": 0}`, 400, "item_count", "read-only"},
			},
			"items": {
				{"POST", items, `{"name": "item-priv", "category": "debian:package"}`, 409, "name", "already has"},
				{"POST", items, `{"name": "x", "category": "debian:package", "artifact": 999}`, 400, "artifact", "999"},
				{"POST", items, `{"name": "x", "category": "debian:package", "artifact": "foo"}`, 400, "artifact", "numeric id"},
				{"POST", items, `{"name": 1, "category": "debian:package"}`, 400, "name", "string"},
				{"POST", items, `{"name": "x", "category": "debian:package", "collection": 1}`, 400, "collection", "read-only"},
				{"DELETE", items + "999/", ``, 404, "", "999"},
			},
		}
		for resource, list := range cases {
			for _, c := range list {
				t.Run(resource+"/"+c.method+" "+c.body, func(t *testing.T) {
					var body any
					if c.body != "" {
						body = c.body
					}
					p := e.do(c.method, c.path, adminSecret, body).wantProblem(t, c.status, c.field)
					if !strings.Contains(p.Detail, c.detail) {
						t.Fatalf("detail %q does not mention %q", p.Detail, c.detail)
					}
				})
			}
		}
		if after := e.snapshot(t); !reflect.DeepEqual(before, after) {
			a, _ := json.Marshal(before)
			b, _ := json.Marshal(after)
			t.Fatalf("refused requests changed state:\nbefore %s\nafter  %s", a, b)
		}
	})
}

// TestBadTextEveryBody sends every POST and PATCH route, found through
// Routes(), the text that encoding/json lets through and the databases
// disagree about: a duplicate key (json keeps the last one), invalid UTF-8
// and lone surrogates (json replaces them with U+FFFD), NUL characters
// (SQLite stores them, PostgreSQL refuses them). Both databases must answer
// the same 400 naming the field, at any depth, and store nothing.
func TestBadTextEveryBody(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		before := e.snapshot(t)
		for _, pattern := range e.routes("POST", "PATCH") {
			method, _, _ := strings.Cut(pattern, " ")
			p := e.pathFor(pattern)
			t.Run(pattern, func(t *testing.T) {
				e.do(method, p, adminSecret, `{"name": "a", "name": "b"}`).wantProblem(t, 400, "name")
				e.do(method, p, adminSecret, `{"data": {"k": 1, "k": 2}}`).wantProblem(t, 400, "data.k")
				e.do(method, p, adminSecret, `{"name": "a\u0000b"}`).wantProblem(t, 400, "name")
				e.do(method, p, adminSecret, `{"data": {"k": ["x", "\u0000"]}}`).wantProblem(t, 400, "data.k[1]")
				e.do(method, p, adminSecret, `{"data": {"a\u0000": 1}}`).wantProblem(t, 400, `data["a\x00"]`)
				e.do(method, p, adminSecret, "{\"name\": \"a\xffb\"}").wantProblem(t, 400, "name")
				e.do(method, p, adminSecret, `{"name": "\ud800"}`).wantProblem(t, 400, "name")
				e.do(method, p+"?x=a%00b", adminSecret, `{}`).wantProblem(t, 400, "x")
			})
		}
		if after := e.snapshot(t); !reflect.DeepEqual(before, after) {
			t.Fatalf("refused requests changed state:\nbefore %v\nafter  %v", before, after)
		}
	})
}

// TestNULInValidBodies is the report of issue 13: otherwise valid bodies
// with one NUL character gave 500 on PostgreSQL and were stored on SQLite.
func TestNULInValidBodies(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		before := e.snapshot(t)
		pub := itoa(e.ids["pub"])
		for _, c := range []badCase{
			{"PATCH", "/api/1.0/scopes/" + itoa(e.ids["scope"]) + "/", `{"label": "a\u0000b"}`, 400, "label", "NUL"},
			{"POST", "/api/1.0/identities/", `{"user": "bob", "issuer": "a\u0000b", "subject": "s"}`, 400, "issuer", "NUL"},
			{"POST", "/api/1.0/assets/", `{"category": "test:x", "workspace": ` + pub + `, "data": {"k": "a\u0000"}}`, 400, "data.k", "NUL"},
			{"POST", "/api/1.0/artifacts/", `{"category": "test:x", "workspace": ` + pub + `, "data": {"k": "a\u0000"}}`, 400, "data.k", "NUL"},
			{"POST", "/api/1.0/work-requests/", `{"task_type": "Worker", "task_name": "command", "workspace": ` + pub + `,
				"task_data": {"host_architecture": "amd64", "script": "echo \u0000"}}`, 400, "task_data.script", "NUL"},
			{"POST", "/api/1.0/tokens/", `{"comment": "a\u0000b"}`, 400, "comment", "NUL"},
			{"PATCH", "/api/1.0/tokens/" + itoa(e.ids["alice_token"]) + "/", `{"comment": "a\u0000b"}`, 400, "comment", "NUL"},
			{"GET", "/api/1.0/scopes/?name=a%00b", ``, 400, "name", "NUL"},
			{"GET", "/api/1.0/artifacts/" + itoa(e.ids["artifact:priv"]) + "/files/f%00.txt", ``, 400, "path", "NUL"},
		} {
			t.Run(c.method+" "+c.path+" "+c.body, func(t *testing.T) {
				var body any
				if c.body != "" {
					body = c.body
				}
				p := e.do(c.method, c.path, adminSecret, body).wantProblem(t, c.status, c.field)
				if !strings.Contains(p.Detail, c.detail) {
					t.Fatalf("detail %q does not mention %q", p.Detail, c.detail)
				}
			})
		}
		if after := e.snapshot(t); !reflect.DeepEqual(before, after) {
			t.Fatalf("refused requests changed state:\nbefore %v\nafter  %v", before, after)
		}
	})
}

// TestLenientValuesRefused: values that encoding/json or a lax type would
// have read as something else are refused, naming the field.
func TestLenientValuesRefused(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		before := e.snapshot(t)
		priv := itoa(e.ids["priv"])
		for _, c := range []badCase{
			// a bare number has no unit: 1.5 what? It was stored as "1.5s".
			{"POST", "/api/1.0/workspaces/", `{"name": "x", "scope": "debian", "expiration_delay": 1.5}`, 400, "expiration_delay", "unit"},
			{"PATCH", "/api/1.0/workspaces/" + priv + "/", `{"expiration_delay": 86400}`, 400, "expiration_delay", "unit"},
			// the last "name" used to win: a rename nobody asked for
			{"PATCH", "/api/1.0/workspaces/" + priv + "/", `{"name": "x", "name": "y"}`, 400, "name", "twice"},
			{"PATCH", "/api/1.0/workflow-templates/" + itoa(e.ids["tmpl:priv"]) + "/", `{"name": "x", "name": "y"}`, 400, "name", "twice"},
			{"POST", "/api/1.0/workflow-templates/", "{\"name\": \"t\xff\", \"workspace\": \"debian/priv\", \"kind\": \"sequence\"}", 400, "name", "UTF-8"},
		} {
			t.Run(c.method+" "+c.body, func(t *testing.T) {
				p := e.do(c.method, c.path, adminSecret, c.body).wantProblem(t, c.status, c.field)
				if !strings.Contains(p.Detail, c.detail) {
					t.Fatalf("detail %q does not mention %q", p.Detail, c.detail)
				}
			})
		}
		if after := e.snapshot(t); !reflect.DeepEqual(before, after) {
			t.Fatalf("refused requests changed state:\nbefore %v\nafter  %v", before, after)
		}
	})
}
