package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/testdb"
	"github.com/kiln-build/kiln/internal/workflow"
)

// The read twin of TestWriteRoutesAuth: every GET route of the API, asked
// by every kind of caller, about objects of a public and of a private
// workspace. A caller who may not see an object gets exactly the answer
// it would get if the object did not exist (404 for a path, 400 naming the
// parameter for a list filter), never 403 and never data; a caller who
// may see it gets that object. Lists hold what their callers see and
// nothing else.

// Callers of the read table. The cast is the one of newEnv, plus a token of
// the admin restricted to the fixtures' own scope.
const (
	anonymous     = "anonymous"
	wrongToken    = "wrong token"
	disabledToken = "disabled token"
	outsider      = "outsider"         // bob: a user with no role anywhere
	member        = "member"           // alice: contributor in debian/priv
	admin         = "admin"            // the admin, unrestricted
	runnerToken   = "runner"           // runner-1's token, running wr:priv
	scopedAway    = "scoped elsewhere" // the admin's token restricted to scope "other"
	scopedHere    = "scoped here"      // the admin's token restricted to scope "debian"
)

var readers = []string{anonymous, wrongToken, disabledToken, outsider, member, admin, runnerToken, scopedAway, scopedHere}

// readerToken names the secret in env.tok that each reader sends ("" for
// none).
var readerToken = map[string]string{
	anonymous: "", wrongToken: "wrong", disabledToken: "disabled", outsider: "bob", member: "alice",
	admin: "admin", runnerToken: "worker", scopedAway: "scoped", scopedHere: "scoped-here",
}

type set map[string]bool

func who(names ...string) set {
	s := set{}
	for _, n := range names {
		s[n] = true
	}
	return s
}

// audiences says who sees each fixture once a route lets it in (gates
// come first: anonymous callers never reach a group, whatever its
// audience). Admins see everything within their token's scope; objects of
// no scope (users, tokens, identities, workers, file stores) are not
// narrowed by a scope restriction.
var audiences = func() map[string]set {
	inDebian := who(anonymous, outsider, member, admin, scopedHere)           // public objects of scope debian
	private := who(member, admin, scopedHere)                                 // debian/priv, where alice is a member
	global := who(anonymous, outsider, member, admin, scopedHere, scopedAway) // objects outside any scope
	alices := who(member, admin, scopedHere, scopedAway)                      // alice's own user, token, identity
	a := map[string]set{
		"scope": inDebian, "scope:other": who(anonymous, outsider, member, admin, scopedAway),
		"far": who(admin, scopedAway), "group": inDebian,
		"alice": alices, "alice_token": alices, "identity": alices,
		"worker": global, "filestore": global, "pool": global, "instance": global,
	}
	for _, k := range []string{"", "asset:", "coll:", "item:", "member:", "tmpl:", "wf:", "child:", "wr:", "art:", "log:"} {
		a[k+"pub"], a[k+"priv"] = inDebian, private
	}
	return a
}()

// gate is who a route lets in at all, before it looks at any object.
type gate int

const (
	anyone  gate = iota // anonymous callers and users; runners get 403
	users               // users: anonymous callers get 401, runners 403
	admins              // admins: anonymous callers get 401, other users and runners 403
	runners             // runner tokens: anonymous callers get 401, users 403
)

// readCase is one request of the table.
type readCase struct {
	// path is the request path; {key} stands for the id of fixture key.
	path string
	gate gate
	// object is the fixture the path names whose visibility decides the
	// answer: the item shown, the parent of a sub-resource, or the value
	// of a list filter. Callers outside its audience get a 404 — or, when
	// filter names the query parameter, a 400 naming it — identical to the
	// answer about an object that does not exist.
	object string
	filter string
	// name is how the path names object when not as {object}: a filter by
	// name, such as "debian/priv".
	name string
	// list names the fixtures of a list answer: each is present for the
	// callers in its audience and absent for everyone else. owner, when
	// set, says which workspace or scope each result belongs to: the
	// caller must see it, whatever the result.
	list  []string
	owner owned
	// raw is the body of a route answering bytes (downloads, logs); an
	// empty list, raw and status mean the answer is the object itself.
	raw string
	// runner lets the runner through when it runs the request that made
	// the artifact: runners reach those, and only those.
	runner bool
	// stats names the workspaces whose runs a statistics answer holds:
	// each is among its "workspaces" for the callers in its audience and
	// absent for everyone else, and no figure of it is anywhere else.
	stats []string
	// status is the answer to the callers let in, when not 200.
	status int
}

// owned names the field of a list result that holds the id of its
// workspace or scope.
type owned struct{ field, kind string }

var (
	byWorkspace     = owned{"workspace", "workspace"}
	byScope         = owned{"scope", "scope"}
	workspaceItself = owned{"id", "workspace"}
	scopeItself     = owned{"id", "scope"}
)

// readRules covers every GET route. A route missing here fails
// TestReadRoutesAuth: a new route must state who may read what.
var readRules = map[string][]readCase{
	"GET /api/1.0/scopes/{$}": {
		{path: "/api/1.0/scopes/", list: []string{"scope", "scope:other"}, owner: scopeItself},
		{path: "/api/1.0/scopes/?name=debian", list: []string{"scope"}, owner: scopeItself},
	},
	"GET /api/1.0/scopes/{id}/{$}": {
		{path: "/api/1.0/scopes/{scope}/", object: "scope"},
		{path: "/api/1.0/scopes/{scope:other}/", object: "scope:other"},
	},
	"GET /api/1.0/workspaces/{$}": {
		{path: "/api/1.0/workspaces/", list: []string{"pub", "priv", "far"}, owner: workspaceItself},
		{path: "/api/1.0/workspaces/?scope=debian", list: []string{"pub", "priv"}, owner: workspaceItself},
	},
	"GET /api/1.0/workspaces/{id}/{$}": {
		{path: "/api/1.0/workspaces/{pub}/", object: "pub"},
		{path: "/api/1.0/workspaces/{priv}/", object: "priv"},
		{path: "/api/1.0/workspaces/{far}/", object: "far"},
	},
	"GET /api/1.0/workspaces/{id}/members/{$}": {
		{path: "/api/1.0/workspaces/{pub}/members/", object: "pub", list: []string{"member:pub"}, owner: byWorkspace},
		{path: "/api/1.0/workspaces/{priv}/members/", object: "priv", list: []string{"member:priv"}, owner: byWorkspace},
	},
	"GET /api/1.0/users/{$}": {
		{path: "/api/1.0/users/", gate: admins, list: []string{"alice"}},
	},
	"GET /api/1.0/users/{id}/{$}": {
		{path: "/api/1.0/users/{alice}/", gate: users, object: "alice"},
	},
	"GET /api/1.0/identities/{$}": {
		{path: "/api/1.0/identities/", gate: users, list: []string{"identity"}},
	},
	"GET /api/1.0/identities/{id}/{$}": {
		{path: "/api/1.0/identities/{identity}/", gate: users, object: "identity"},
	},
	"GET /api/1.0/groups/{$}": {
		{path: "/api/1.0/groups/", gate: users, list: []string{"group"}, owner: byScope},
	},
	"GET /api/1.0/groups/{id}/{$}": {
		{path: "/api/1.0/groups/{group}/", gate: users, object: "group"},
	},
	"GET /api/1.0/tokens/{$}": {
		{path: "/api/1.0/tokens/", gate: users, list: []string{"alice_token"}},
	},
	"GET /api/1.0/tokens/{id}/{$}": {
		{path: "/api/1.0/tokens/{alice_token}/", gate: users, object: "alice_token"},
	},
	"GET /api/1.0/file-stores/{$}": {
		{path: "/api/1.0/file-stores/", gate: admins, list: []string{"filestore"}},
	},
	"GET /api/1.0/file-stores/{id}/{$}": {
		{path: "/api/1.0/file-stores/{filestore}/", gate: admins, object: "filestore"},
	},
	"GET /api/1.0/worker-pools/{$}": {
		{path: "/api/1.0/worker-pools/", gate: admins, list: []string{"pool"}},
		{path: "/api/1.0/worker-pools/?name=spare", gate: admins, list: []string{"pool"}},
	},
	"GET /api/1.0/worker-pools/{id}/{$}": {
		{path: "/api/1.0/worker-pools/{pool}/", gate: admins, object: "pool"},
	},
	"GET /api/1.0/worker-pools/{id}/instances/{$}": {
		{path: "/api/1.0/worker-pools/{pool}/instances/", gate: admins, object: "pool", list: []string{}},
		{path: "/api/1.0/worker-pools/{pool}/instances/?all=true", gate: admins, object: "pool", list: []string{"instance"}},
	},
	"GET /api/1.0/assets/{$}": {
		{path: "/api/1.0/assets/", list: []string{"asset:pub", "asset:priv"}, owner: byWorkspace},
		{path: "/api/1.0/assets/?workspace=debian/priv", object: "priv", filter: "workspace", name: "debian/priv",
			list: []string{"asset:priv"}, owner: byWorkspace},
		{path: "/api/1.0/assets/?workspace={pub}", object: "pub", filter: "workspace", list: []string{"asset:pub"}, owner: byWorkspace},
	},
	"GET /api/1.0/assets/{id}/{$}": {
		{path: "/api/1.0/assets/{asset:pub}/", object: "asset:pub"},
		{path: "/api/1.0/assets/{asset:priv}/", object: "asset:priv"},
	},
	"GET /api/1.0/collections/{$}": {
		{path: "/api/1.0/collections/", list: []string{"coll:pub", "coll:priv"}, owner: byWorkspace},
		{path: "/api/1.0/collections/?workspace={priv}", object: "priv", filter: "workspace", list: []string{"coll:priv"}, owner: byWorkspace},
	},
	"GET /api/1.0/collections/{id}/{$}": {
		{path: "/api/1.0/collections/{coll:pub}/", object: "coll:pub"},
		{path: "/api/1.0/collections/{coll:priv}/", object: "coll:priv"},
	},
	"GET /api/1.0/collections/{id}/items/{$}": {
		{path: "/api/1.0/collections/{coll:pub}/items/", object: "coll:pub", list: []string{"item:pub"}},
		{path: "/api/1.0/collections/{coll:priv}/items/", object: "coll:priv", list: []string{"item:priv"}},
	},
	"GET /api/1.0/workflow-templates/schema/{$}": {
		{path: "/api/1.0/workflow-templates/schema/", raw: string(workflow.Schema())},
	},
	"GET /api/1.0/work-requests/{$}": {
		{path: "/api/1.0/work-requests/", owner: byWorkspace,
			list: []string{"wr:pub", "wr:priv", "wf:pub", "wf:priv", "child:pub", "child:priv"}},
		{path: "/api/1.0/work-requests/?workspace=debian/priv", object: "priv", filter: "workspace", name: "debian/priv",
			list: []string{"wr:priv", "wf:priv", "child:priv"}, owner: byWorkspace},
		{path: "/api/1.0/work-requests/?parent={wf:priv}", list: []string{"child:priv"}, owner: byWorkspace},
		{path: "/api/1.0/work-requests/?status=running", list: []string{"wr:priv", "wf:pub", "wf:priv"}, owner: byWorkspace},
	},
	"GET /api/1.0/work-requests/{id}/{$}": {
		{path: "/api/1.0/work-requests/{wr:pub}/", object: "wr:pub"},
		{path: "/api/1.0/work-requests/{wr:priv}/", object: "wr:priv"},
		{path: "/api/1.0/work-requests/{child:priv}/", object: "child:priv"},
	},
	"GET /api/1.0/work-requests/{id}/logs/{$}": {
		{path: "/api/1.0/work-requests/{wr:pub}/logs/", object: "wr:pub", raw: "log of the public request\n"},
		{path: "/api/1.0/work-requests/{wr:priv}/logs/", object: "wr:priv", raw: "log of the private request\n"},
	},
	"GET /api/1.0/workers/{$}": {
		{path: "/api/1.0/workers/", gate: users, list: []string{"worker"}},
	},
	"GET /api/1.0/workers/{id}/{$}": {
		{path: "/api/1.0/workers/{worker}/", gate: users, object: "worker"},
	},
	// the runner protocol: a plain GET is no WebSocket upgrade, and this
	// API runs without a scheduler, so a runner let in gets 503
	"GET /api/1.0/workers/connect/{$}": {
		{path: "/api/1.0/workers/connect/", gate: runners, status: http.StatusServiceUnavailable},
	},
	"GET /api/1.0/artifacts/{$}": {
		{path: "/api/1.0/artifacts/", list: []string{"art:pub", "art:priv", "log:pub", "log:priv"}, owner: byWorkspace},
		{path: "/api/1.0/artifacts/?work_request={wr:priv}", list: []string{"log:priv"}, owner: byWorkspace},
		{path: "/api/1.0/artifacts/?workspace=debian/priv&category=test:file", object: "priv", filter: "workspace", name: "debian/priv",
			list: []string{"art:priv"}, owner: byWorkspace},
	},
	"GET /api/1.0/artifacts/{id}/{$}": {
		{path: "/api/1.0/artifacts/{art:pub}/", object: "art:pub"},
		{path: "/api/1.0/artifacts/{art:priv}/", object: "art:priv"},
	},
	"GET /api/1.0/artifacts/{id}/files/{path...}": {
		{path: "/api/1.0/artifacts/{art:pub}/files/hello.txt", object: "art:pub", raw: "hello from the public workspace\n"},
		{path: "/api/1.0/artifacts/{art:priv}/files/hello.txt", object: "art:priv", raw: "hello from the private workspace\n"},
		{path: "/api/1.0/artifacts/{log:pub}/files/" + tasks.LogFileName, object: "log:pub", raw: "log of the public request\n"},
		{path: "/api/1.0/artifacts/{log:priv}/files/" + tasks.LogFileName, object: "log:priv", raw: "log of the private request\n", runner: true},
	},
	"GET /api/1.0/workflow-templates/{$}": {
		{path: "/api/1.0/workflow-templates/", list: []string{"tmpl:pub", "tmpl:priv"}, owner: byWorkspace},
		{path: "/api/1.0/workflow-templates/?workspace=debian/priv", object: "priv", filter: "workspace", name: "debian/priv",
			list: []string{"tmpl:priv"}, owner: byWorkspace},
	},
	"GET /api/1.0/workflow-templates/{id}/{$}": {
		{path: "/api/1.0/workflow-templates/{tmpl:pub}/", object: "tmpl:pub"},
		{path: "/api/1.0/workflow-templates/{tmpl:priv}/", object: "tmpl:priv"},
	},
	"GET /api/1.0/workflows/{$}": {
		{path: "/api/1.0/workflows/", list: []string{"wf:pub", "wf:priv"}, owner: byWorkspace},
		{path: "/api/1.0/workflows/?workspace=debian/priv", object: "priv", filter: "workspace", name: "debian/priv",
			list: []string{"wf:priv"}, owner: byWorkspace},
	},
	"GET /api/1.0/statistics/{$}": {
		{path: "/api/1.0/statistics/", stats: []string{"pub", "priv"}},
		{path: "/api/1.0/statistics/?window=30d&workspace=debian/priv", object: "priv", filter: "workspace", name: "debian/priv",
			stats: []string{"priv"}},
		{path: "/api/1.0/statistics/?scope=debian", object: "scope", filter: "scope", name: "debian", stats: []string{"pub", "priv"}},
	},
	"GET /api/1.0/workflows/{id}/{$}": {
		{path: "/api/1.0/workflows/{wf:pub}/", object: "wf:pub"},
		{path: "/api/1.0/workflows/{wf:priv}/", object: "wf:priv"},
	},
}

func TestReadRoutesAuth(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		e.readFixtures(context.Background())
		mux := http.NewServeMux()
		for _, r := range e.api.Routes() {
			mux.Handle(r.Pattern, r.Handler)
		}
		gets := map[string]bool{}
		for _, pattern := range e.routes("GET") {
			gets[pattern] = true
			cases, ok := readRules[pattern]
			if !ok || len(cases) == 0 {
				t.Errorf("GET route %q has no entry in readRules (authz_read_test.go): add a case per kind of object it shows, "+
					"with its gate and the fixture whose visibility decides the answer", pattern)
				continue
			}
			t.Run(pattern, func(t *testing.T) {
				for _, c := range cases {
					p := e.fill(c.path)
					req, _ := http.NewRequest("GET", p, nil)
					if _, got := mux.Handler(req); got != pattern {
						t.Fatalf("case %s is served by %q, not by the route it is listed under", c.path, got)
					}
					for _, r := range readers {
						t.Run(r+" "+c.path, func(t *testing.T) { e.checkRead(t, c, r) })
					}
				}
			})
		}
		for pattern := range readRules {
			if !gets[pattern] {
				t.Errorf("readRules lists %q, which is no route of the API: remove it", pattern)
			}
		}
	})
}

// checkRead asks c as reader r and checks the answer.
func (e *env) checkRead(t *testing.T, c readCase, r string) {
	t.Helper()
	auth := ""
	if k := readerToken[r]; k != "" {
		auth = "Token " + e.tok[k]
	}
	res := e.request("GET", e.fill(c.path), auth, "", nil)
	status, field := c.refusal(r)
	if status != 0 {
		p := res.wantProblem(t, status, field)
		if status == 401 && res.header.Get("WWW-Authenticate") != "Token" {
			t.Fatalf("401 without WWW-Authenticate: Token: %v", res.header)
		}
		if c.object == "" {
			return
		}
		// the same answer as about an object that does not exist
		ghost := e.request("GET", e.ghost(c), auth, "", nil)
		g := ghost.wantProblem(t, status, field)
		if want := e.unname(c, p.Detail); want != g.Detail {
			t.Fatalf("the answer tells a hidden object from a missing one:\n hidden:  %s\n missing: %s", p.Detail, g.Detail)
		}
		return
	}
	want := c.status
	if want == 0 {
		want = 200
	}
	if want != 200 {
		res.wantProblem(t, want, "")
		return
	}
	res.want(t, 200)
	switch {
	case c.raw != "":
		if string(res.body) != c.raw {
			t.Fatalf("body %q, want %q", res.body, c.raw)
		}
	case c.stats != nil:
		var ans struct {
			Workspaces     []map[string]any `json:"workspaces"`
			WorkspaceTasks []map[string]any `json:"workspace_tasks"`
		}
		if err := json.Unmarshal(res.body, &ans); err != nil {
			t.Fatalf("%v: %s", err, res.body)
		}
		got := map[int64]bool{}
		for _, m := range append(ans.Workspaces, ans.WorkspaceTasks...) {
			e.checkOwner(t, owned{"workspace_id", "workspace"}, m, r)
			got[int64(m["workspace_id"].(float64))] = true
		}
		for _, k := range c.stats {
			if sees := audiences[k][r]; got[e.ids[k]] != sees {
				t.Fatalf("statistics of %s in the answer: %v, want %v (%s)", k, got[e.ids[k]], sees, res.body)
			}
		}
	case c.list != nil:
		results, _ := res.list(t)
		got := map[int64]bool{}
		for _, m := range results {
			got[id(m)] = true
			if c.owner.field != "" {
				e.checkOwner(t, c.owner, m, r)
			}
		}
		for _, k := range c.list {
			if sees := audiences[k][r]; got[e.ids[k]] != sees {
				t.Fatalf("%s in the list: %v, want %v (results %v)", k, got[e.ids[k]], sees, ids(results))
			}
		}
	default:
		if got := id(res.obj(t)); got != e.ids[c.object] {
			t.Fatalf("answered object %d, want %s (%d)", got, c.object, e.ids[c.object])
		}
	}
}

// refusal is the status (0 when none) and problem field of c's answer to
// reader r.
func (c readCase) refusal(r string) (int, string) {
	switch r {
	case wrongToken, disabledToken:
		return 401, ""
	case anonymous:
		if c.gate != anyone {
			return 401, ""
		}
	case runnerToken:
		if c.gate != runners && !c.runner {
			return 403, ""
		}
	default: // users
		switch {
		case c.gate == runners:
			return 403, ""
		case c.gate == admins && r != admin && r != scopedAway && r != scopedHere:
			return 403, ""
		}
	}
	if c.object == "" || audiences[c.object][r] || r == runnerToken {
		return 0, ""
	}
	if c.filter != "" {
		return 400, c.filter
	}
	return 404, ""
}

// checkOwner fails when a list result belongs to a workspace or scope the
// reader does not see.
func (e *env) checkOwner(t *testing.T, o owned, m map[string]any, r string) {
	t.Helper()
	v, ok := m[o.field].(float64)
	if !ok {
		t.Fatalf("result without %q: %v", o.field, m)
	}
	keys := map[string][]string{"workspace": {"pub", "priv", "far"}, "scope": {"scope", "scope:other"}}[o.kind]
	for _, k := range keys {
		if e.ids[k] == int64(v) {
			if !audiences[k][r] {
				t.Fatalf("the list shows %v of %s %s, which %s does not see", m["id"], o.kind, k, r)
			}
			return
		}
	}
	t.Fatalf("result %v belongs to no %s of the fixtures", m, o.kind)
}

var placeholder = regexp.MustCompile(`\{[^}]+\}`)

// fill replaces {key} placeholders with fixture ids.
func (e *env) fill(p string) string {
	return placeholder.ReplaceAllStringFunc(p, func(s string) string {
		id, ok := e.ids[strings.Trim(s, "{}")]
		if !ok {
			e.t.Fatalf("no fixture %s", s)
		}
		return itoa(id)
	})
}

// missing is the id and workspace name of objects that do not exist.
const (
	missingID   = "999999999"
	missingName = "debian/nowhere"
)

// ghost is c's path about an object that does not exist.
func (e *env) ghost(c readCase) string {
	if c.name != "" {
		return e.fill(strings.Replace(c.path, c.name, missingName, 1))
	}
	return e.fill(strings.Replace(c.path, "{"+c.object+"}", missingID, 1))
}

// unname turns the detail of an answer about c's object into the detail
// expected about a missing one.
func (e *env) unname(c readCase, detail string) string {
	if c.name != "" {
		return strings.ReplaceAll(detail, c.name, missingName)
	}
	return regexp.MustCompile(`\b`+itoa(e.ids[c.object])+`\b`).ReplaceAllString(detail, missingID)
}

// readFixtures adds to newEnv's cast what the read table needs: the same
// kinds of objects in the public workspace as in the private one, files
// and logs with content, a member of each workspace, the admin's token
// restricted to debian, and runner-1 running wr:priv.
func (e *env) readFixtures(ctx context.Context) {
	st := e.st
	here, err := st.CreateToken(ctx, model.Token{UserID: ptr(e.ids["admin"]), Enabled: true, ScopeID: ptr(e.ids["scope"])})
	e.must(err)
	e.tok["scoped-here"] = here.Secret
	e.tok["wrong"] = "kiln_0000"
	e.ids["member:priv"] = e.ids["member:alice"]
	wm := &model.WorkspaceMember{WorkspaceID: e.ids["pub"], UserID: ptr(e.ids["olga"]), Role: model.RoleViewer}
	e.must(st.WorkspaceMembers().Create(ctx, wm))
	e.ids["member:pub"] = wm.ID
	wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: e.ids["pub"], MaxRetries: 3,
		Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
	e.must(st.SubmitWorkRequest(ctx, wr))
	e.ids["wr:pub"] = wr.ID
	tmpl, err := st.WorkflowTemplates().Get(ctx, e.ids["tmpl:pub"], nil)
	e.must(err)
	root, err := workflow.Start(ctx, st, tmpl, nil, ptr(e.ids["admin"]))
	e.must(err)
	e.ids["wf:pub"] = root.ID
	for _, ws := range []string{"pub", "priv"} {
		kids, err := st.WorkRequests().List(ctx, store.Query{Filter: map[string]string{"parent": itoa(e.ids["wf:"+ws])}})
		e.must(err)
		e.ids["child:"+ws] = kids[0].ID
	}
	// upload creates an artifact as the admin with one file, and uploads it
	upload := func(key, ws, category, workRequest, path, content string) {
		body := fmt.Sprintf(`{"category": %q, "workspace": "debian/%s", %s"files": [{"path": %q, "sha256": %q, "size": %d}]}`,
			category, ws, workRequest, path, sum(content), len(content))
		art := e.do("POST", "/api/1.0/artifacts/", adminSecret, body).want(e.t, 201).obj(e.t)
		e.ids[key] = id(art)
		e.doCT("PUT", "/api/1.0/artifacts/"+itoa(id(art))+"/files/"+path, adminSecret, "application/octet-stream", content).
			want(e.t, 201)
	}
	for _, ws := range []struct{ key, name string }{{"pub", "public"}, {"priv", "private"}} {
		upload("art:"+ws.key, ws.key, "test:file", "", "hello.txt", "hello from the "+ws.name+" workspace\n")
		upload("log:"+ws.key, ws.key, tasks.DebugLogsCategory, fmt.Sprintf(`"created_by_work_request": %d, `, e.ids["wr:"+ws.key]),
			tasks.LogFileName, "log of the "+ws.name+" request\n")
	}
	// runner-1 runs wr:priv, the oldest pending request it can run; then
	// a request of each workspace finishes, for the statistics
	_, _, err = st.ConnectWorker(ctx, e.ids["worker"], model.WorkerMetadata{Architectures: []string{"amd64"}})
	e.must(err)
	got, err := st.ClaimWorkRequest(ctx, e.ids["worker"])
	e.must(err)
	if got.ID != e.ids["wr:priv"] {
		e.t.Fatalf("runner-1 claimed %d, want wr:priv (%d)", got.ID, e.ids["wr:priv"])
	}
	for _, ws := range []string{"pub", "priv"} {
		done := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: e.ids[ws],
			Data: json.RawMessage(`{"host_architecture": "s390x"}`)}
		e.must(st.SubmitWorkRequest(ctx, done))
		_, err := st.CompleteWorkRequest(ctx, done.ID, 0, store.Completion{Result: model.ResultSuccess})
		e.must(err)
	}
}
