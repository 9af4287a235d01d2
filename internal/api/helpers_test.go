package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/blobs"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

const adminSecret = "kiln_test_admin_secret"

// env is a running API over a real store, with a cast of users and
// objects:
//
//	scope "debian" (id ids["scope"]) with workspaces "pub" (public) and
//	"priv" (private); alice is contributor in priv, olga owner of priv;
//	bob is a user without memberships; carol is inactive; scope "other"
//	has workspace "far" (private).
type env struct {
	t     *testing.T
	st    *store.SQL
	api   *api.API
	srv   *httptest.Server
	blobs *blobs.Manager
	// secrets by name: admin, alice, olga, bob, carol (inactive user),
	// disabled (alice's disabled token), worker (worker-only), scoped
	// (admin's token restricted to scope "other").
	tok map[string]string
	ids map[string]int64
}

func newEnv(t *testing.T, dsn string) *env {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Bootstrap(ctx, adminSecret, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, tok: map[string]string{"admin": adminSecret}, ids: map[string]int64{}}
	e.serve(st, blobs.Options{})
	e.fixtures(ctx)
	return e
}

// serve starts the API over st, as a server replica does.
func (e *env) serve(st *store.SQL, o blobs.Options) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Logger = logger
	e.st, e.blobs = st, blobs.New(st, o)
	e.t.Cleanup(e.blobs.Close)
	e.api = api.New(st, logger, api.Options{MaxBodyBytes: 64 << 10, Blobs: e.blobs})
	e.srv = httptest.NewServer(e.api.Handler())
	e.t.Cleanup(e.srv.Close)
}

// replica is a second API server over its own connection pool to the
// same database: another replica of the same farm, with the same
// fixtures and tokens.
func (e *env) replica(t *testing.T, dsn string, o blobs.Options) *env {
	t.Helper()
	st, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &env{t: t, tok: e.tok, ids: e.ids}
	r.serve(st, o)
	return r
}

func (e *env) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) fixtures(ctx context.Context) {
	st := e.st
	admin, err := st.Users().Lookup(ctx, store.AdminUsername, nil)
	e.must(err)
	e.ids["admin"] = admin.ID
	sys, err := st.Users().Lookup(ctx, store.SystemUsername, nil)
	e.must(err)
	e.ids["system"] = sys.ID
	toks, err := st.Tokens().List(ctx, store.Query{Filter: map[string]string{"user": strconv.FormatInt(admin.ID, 10)}})
	e.must(err)
	e.ids["admin_token"] = toks[0].ID

	for _, name := range []string{"scope:debian", "scope:other"} {
		s := &model.Scope{Name: strings.TrimPrefix(name, "scope:")}
		e.must(st.Scopes().Create(ctx, s))
		e.ids[name] = s.ID
	}
	e.ids["scope"] = e.ids["scope:debian"]
	for _, w := range []struct {
		key, name, scope string
		public           bool
	}{{"pub", "pub", "scope:debian", true}, {"priv", "priv", "scope:debian", false}, {"far", "far", "scope:other", false}} {
		ws := &model.Workspace{Name: w.name, ScopeID: e.ids[w.scope], Public: w.public}
		e.must(st.Workspaces().Create(ctx, ws))
		e.ids[w.key] = ws.ID
	}
	for _, u := range []struct {
		name   string
		active bool
	}{{"alice", true}, {"olga", true}, {"bob", true}, {"carol", true}} {
		user := &model.User{Username: u.name, Email: u.name + "@example.org", Active: u.active}
		e.must(st.Users().Create(ctx, user))
		e.ids[u.name] = user.ID
		nt, err := st.CreateToken(ctx, model.Token{UserID: &user.ID, Enabled: true, Comment: u.name})
		e.must(err)
		e.tok[u.name] = nt.Secret
		e.ids[u.name+"_token"] = nt.ID
	}
	// carol's token was made while she was active; she no longer is
	_, err = st.Users().Update(ctx, e.ids["carol"], nil, func(u *model.User) error { u.Active = false; return nil })
	e.must(err)
	dis, err := st.CreateToken(ctx, model.Token{UserID: ptr(e.ids["alice"]), Enabled: false, Comment: "disabled"})
	e.must(err)
	e.tok["disabled"] = dis.Secret
	w := &model.Worker{Name: "runner-1", WorkerType: model.WorkerExternal, Enabled: true}
	e.must(st.Workers().Create(ctx, w))
	e.ids["worker"] = w.ID
	wt, err := st.CreateToken(ctx, model.Token{WorkerID: &w.ID, Enabled: true})
	e.must(err)
	e.tok["worker"] = wt.Secret
	sc, err := st.CreateToken(ctx, model.Token{UserID: &admin.ID, Enabled: true, ScopeID: ptr(e.ids["scope:other"])})
	e.must(err)
	e.tok["scoped"] = sc.Secret

	for _, m := range []struct {
		user, ws string
		role     model.WorkspaceRole
	}{{"alice", "priv", model.RoleContributor}, {"olga", "priv", model.RoleOwner}} {
		wm := &model.WorkspaceMember{WorkspaceID: e.ids[m.ws], UserID: ptr(e.ids[m.user]), Role: m.role}
		e.must(st.WorkspaceMembers().Create(ctx, wm))
		e.ids["member:"+m.user] = wm.ID
	}
	for _, ws := range []string{"pub", "priv"} {
		as := &model.Asset{Category: "test:key", WorkspaceID: e.ids[ws], Data: json.RawMessage(`{"k":1}`)}
		e.must(st.Assets().Create(ctx, as))
		e.ids["asset:"+ws] = as.ID
		c := &model.Collection{Category: "debian:suite", Name: "suite-" + ws, WorkspaceID: e.ids[ws]}
		e.must(st.Collections().Create(ctx, c))
		e.ids["coll:"+ws] = c.ID
		it := &model.CollectionItem{CollectionID: c.ID, Name: "item-" + ws, Category: "debian:package"}
		e.must(st.AddCollectionItem(ctx, it, nil))
		e.ids["item:"+ws] = it.ID
	}
	g := &model.Group{Name: "team", ScopeID: e.ids["scope"], Members: []int64{e.ids["alice"]}}
	e.must(st.Groups().Create(ctx, g))
	e.ids["group"] = g.ID
	id := &model.Identity{UserID: e.ids["alice"], Issuer: "https://sso.example.org", Subject: "alice-1"}
	e.must(st.Identities().Create(ctx, id))
	e.ids["identity"] = id.ID
	fs := &model.FileStore{Name: "spare", Backend: model.BackendLocal, Configuration: json.RawMessage(`{"base_directory":"/tmp/x"}`)}
	e.must(st.FileStores().Create(ctx, fs))
	e.ids["filestore"] = fs.ID
	// a pool that ran one instance (live instances' runtime grows, and
	// the snapshots of these tests compare lists)
	pool := &model.WorkerPool{Name: "spare", Provider: model.ProviderProcess, Enabled: true, Architectures: []string{"amd64"},
		MaxInstances: 2, IdleTimeout: model.Duration(time.Minute), StartupTimeout: model.Duration(time.Minute)}
	e.must(st.WorkerPools().Create(ctx, pool))
	e.ids["pool"] = pool.ID
	inst, _, err := st.StartPoolInstance(ctx, pool.ID)
	e.must(err)
	e.must(st.StopPoolInstance(ctx, inst.ID, time.Now(), "idle_timeout"))
	e.ids["instance"] = inst.ID
	// work of workrequests.go and artifacts.go: a pending request and an
	// artifact with one declared file, both in the private workspace
	wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: e.ids["priv"], MaxRetries: 3,
		Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
	e.must(st.SubmitWorkRequest(ctx, wr))
	e.ids["wr:priv"] = wr.ID
	art := &model.Artifact{Category: "test:file", WorkspaceID: e.ids["priv"], Files: []model.ArtifactFile{
		{Path: "f.txt", SHA256: strings.Repeat("a", 64), Size: 2}}}
	e.must(st.Artifacts().Create(ctx, art))
	e.ids["artifact:priv"] = art.ID
	e.workflowFixtures(ctx)
}

func ptr[T any](v T) *T { return &v }

// resp is an answer of the API.
type resp struct {
	status int
	header http.Header
	body   []byte
}

// problem is the problem+json body of an error answer.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Field  string `json:"field"`
}

// do sends a request with token ("" for none); body is sent as is when
// it is a string or []byte, else encoded as JSON.
func (e *env) do(method, path, token string, body any) resp {
	e.t.Helper()
	return e.doCT(method, path, token, "application/json", body)
}

// doCT is do with another Content-Type.
func (e *env) doCT(method, path, token, contentType string, body any) resp {
	e.t.Helper()
	auth := ""
	if token != "" {
		auth = "Token " + token
	}
	return e.request(method, path, auth, contentType, body)
}

// request sends a request with a raw Authorization header ("" for none).
func (e *env) request(method, path, authorization, contentType string, body any) resp {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		e.must(err)
		r = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	e.must(err)
	if r != nil && contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	res, err := e.srv.Client().Do(req)
	e.must(err)
	defer res.Body.Close()
	buf, err := io.ReadAll(res.Body)
	e.must(err)
	return resp{status: res.StatusCode, header: res.Header, body: buf}
}

// json decodes the body into v.
func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer %d is not JSON: %v\n%s", r.status, err, r.body)
	}
}

// obj decodes a JSON object body.
func (r resp) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	r.json(t, &m)
	return m
}

// list decodes a list envelope.
func (r resp) list(t *testing.T) (results []map[string]any, next *string) {
	t.Helper()
	var env struct {
		Count   *int             `json:"count"`
		Next    *string          `json:"next"`
		Results []map[string]any `json:"results"`
	}
	r.json(t, &env)
	if env.Count == nil || env.Results == nil || *env.Count != len(env.Results) {
		t.Fatalf("bad list envelope: %s", r.body)
	}
	return env.Results, env.Next
}

// want fails unless the answer has status.
func (r resp) want(t *testing.T, status int) resp {
	t.Helper()
	if r.status != status {
		t.Fatalf("want status %d, got %d: %s", status, r.status, r.body)
	}
	return r
}

// wantProblem checks an error answer: status, problem+json, a detail, and
// the field to blame ("" when none is expected, "-" when any).
func (r resp) wantProblem(t *testing.T, status int, field string) problem {
	t.Helper()
	r.want(t, status)
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("want application/problem+json, got %q: %s", ct, r.body)
	}
	var p problem
	r.json(t, &p)
	if p.Type != "about:blank" || p.Status != status || p.Title != http.StatusText(status) || len(p.Detail) < 10 {
		t.Fatalf("incomplete problem: %s", r.body)
	}
	if field != "-" && p.Field != field {
		t.Fatalf("want field %q, got %q: %s", field, p.Field, r.body)
	}
	return p
}

func id(m map[string]any) int64 { return int64(m["id"].(float64)) }

func ids(list []map[string]any) []int64 {
	out := []int64{}
	for _, m := range list {
		out = append(out, id(m))
	}
	return out
}

func path(format string, args ...any) string {
	for _, a := range args {
		format = strings.Replace(format, "%d", strconv.FormatInt(a.(int64), 10), 1)
	}
	return format
}

// pathFor turns a route pattern into a concrete path on the fixtures:
// item routes point at objects of the private workspace where there are
// any, so that outsiders get 404 there.
func (e *env) pathFor(pattern string) string {
	e.t.Helper()
	_, p, _ := strings.Cut(pattern, " ")
	p = strings.TrimSuffix(p, "{$}")
	collection, _, _ := strings.Cut(strings.TrimPrefix(p, api.Prefix), "/")
	key := map[string]string{
		"scopes": "scope", "workspaces": "priv", "users": "bob", "identities": "identity", "groups": "group",
		"tokens": "admin_token", "file-stores": "filestore", "assets": "asset:priv", "collections": "coll:priv",
		"work-requests": "wr:priv", "workers": "worker", "artifacts": "artifact:priv",
		"workflow-templates": "tmpl:priv", "workflows": "wf:priv", "worker-pools": "pool",
	}[collection]
	p = strings.Replace(p, "{path...}", "f.txt", 1)
	p = strings.Replace(p, "{source}", "kiln", 1) // the webhook receiver
	for placeholder, k := range map[string]string{"{id}": key, "{member}": "member:alice", "{item}": "item:priv"} {
		if strings.Contains(p, placeholder) {
			if k == "" {
				e.t.Fatalf("pathFor: no fixture for %s in %s", placeholder, pattern)
			}
			p = strings.Replace(p, placeholder, strconv.FormatInt(e.ids[k], 10), 1)
		}
	}
	if strings.Contains(p, "{") {
		e.t.Fatalf("pathFor: unknown placeholder in %s", pattern)
	}
	return p
}

// routes lists the API's route patterns whose method is one of methods,
// from API.Routes(): the list api.New builds the router from. The table
// tests (writeRules, readRules) walk it, so that a route without an entry
// fails them.
func (e *env) routes(methods ...string) []string {
	var out []string
	for _, r := range e.api.Routes() {
		m, _, ok := strings.Cut(r.Pattern, " ")
		for _, want := range methods {
			if ok && m == want {
				out = append(out, r.Pattern)
			}
		}
	}
	return out
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
