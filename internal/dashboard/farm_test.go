package dashboard_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/dashboard"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/tasks"
)

const adminSecret = "kiln_dashboard_test_admin_secret"

// farm is a running dashboard (with the API it answers downloads through)
// over a real store, with a cast:
//
//	scope "debian" with workspaces "main" (public) and "hushed-ws"
//	(private; alice is its contributor); scope "other" with "far-away"
//	(private, nobody's). bob is a user without memberships. runner-1 is
//	connected and runs wr:priv; wr:pub completed. Each of main and
//	hushed-ws has a workflow with one step, an artifact with hello.txt
//	and the log of its request. Names that only private objects carry
//	start with "hushed" (their tasks are "hushedtask").
type farm struct {
	t    *testing.T
	st   *store.SQL
	api  *api.API
	dash *dashboard.Dashboard
	srv  *httptest.Server
	ids  map[string]int64
	// tok holds token secrets by owner: admin, alice, bob, scoped-here
	// (the admin's, restricted to debian), scoped-away (restricted to
	// other), runner.
	tok map[string]string
	// now is the store's clock; tests move it.
	now time.Time
}

func newFarm(t *testing.T, dsn string) *farm {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &farm{t: t, st: st, ids: map[string]int64{}, tok: map[string]string{"admin": adminSecret},
		now: time.Now().UTC().Truncate(time.Hour).Add(-90 * time.Minute)}
	st.SetClock(func() time.Time { return f.now })
	if _, err := st.Bootstrap(ctx, adminSecret, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.api = api.New(st, logger, api.Options{Now: func() time.Time { return f.now }})
	f.dash, err = dashboard.New(st, f.api, dashboard.Options{Logger: logger, Now: func() time.Time { return f.now }})
	f.must(err)
	mux := http.NewServeMux()
	for _, r := range append(f.api.Routes(), f.dash.Routes()...) {
		mux.Handle(r.Pattern, r.Handler)
	}
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	f.fixtures(ctx)
	return f
}

func (f *farm) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func (f *farm) fixtures(ctx context.Context) {
	st := f.st
	admin, err := st.Users().Lookup(ctx, store.AdminUsername, nil)
	f.must(err)
	f.ids["admin"] = admin.ID
	for _, name := range []string{"debian", "other"} {
		s := &model.Scope{Name: name}
		f.must(st.Scopes().Create(ctx, s))
		f.ids["scope:"+name] = s.ID
	}
	for _, w := range []struct {
		key, name, scope string
		public           bool
	}{{"pub", "main", "debian", true}, {"priv", "hushed-ws", "debian", false}, {"far", "far-away", "other", false}} {
		ws := &model.Workspace{Name: w.name, ScopeID: f.ids["scope:"+w.scope], Public: w.public}
		f.must(st.Workspaces().Create(ctx, ws))
		f.ids[w.key] = ws.ID
	}
	for _, name := range []string{"alice", "bob"} {
		u := &model.User{Username: name, Active: true}
		f.must(st.Users().Create(ctx, u))
		f.ids[name] = u.ID
		tok, err := st.CreateToken(ctx, model.Token{UserID: &u.ID, Enabled: true})
		f.must(err)
		f.tok[name] = tok.Secret
	}
	f.must(st.WorkspaceMembers().Create(ctx, &model.WorkspaceMember{WorkspaceID: f.ids["priv"], UserID: ptr(f.ids["alice"]),
		Role: model.RoleContributor}))
	for key, scope := range map[string]string{"scoped-here": "debian", "scoped-away": "other"} {
		tok, err := st.CreateToken(ctx, model.Token{UserID: &admin.ID, Enabled: true, ScopeID: ptr(f.ids["scope:"+scope])})
		f.must(err)
		f.tok[key] = tok.Secret
	}
	w := &model.Worker{Name: "runner-1", WorkerType: model.WorkerExternal, Enabled: true}
	f.must(st.Workers().Create(ctx, w))
	f.ids["worker"] = w.ID
	wt, err := st.CreateToken(ctx, model.Token{WorkerID: &w.ID, Enabled: true})
	f.must(err)
	f.tok["runner"] = wt.Secret
	_, _, err = st.ConnectWorker(ctx, w.ID, model.WorkerMetadata{Architectures: []string{"amd64"}, HostArchitecture: "amd64",
		Backends: []string{"host"}})
	f.must(err)

	for _, ws := range []struct{ key, task string }{{"pub", "sbuild"}, {"priv", "hushedtask"}} {
		wf := &model.WorkRequest{TaskName: "sequence", WorkspaceID: f.ids[ws.key], CreatedBy: &admin.ID}
		f.must(st.SubmitWorkflow(ctx, wf, []store.WorkflowStep{{Request: &model.WorkRequest{TaskType: model.TaskWorker,
			TaskName: ws.task, StepName: "build", Data: json.RawMessage(`{"host_architecture": "arm64"}`)}}}))
		f.ids["wf:"+ws.key] = wf.ID
		kids, err := st.WorkflowChildren(ctx, wf.ID, nil)
		f.must(err)
		f.ids["child:"+ws.key] = kids[0].ID
		wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: ws.task, WorkspaceID: f.ids[ws.key], CreatedBy: &admin.ID,
			Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
		f.must(st.SubmitWorkRequest(ctx, wr))
		f.ids["wr:"+ws.key] = wr.ID
	}
	// runner-1 runs wr:pub to completion, then takes wr:priv
	f.now = f.now.Add(time.Minute)
	got, err := st.ClaimWorkRequest(ctx, w.ID)
	f.must(err)
	if got.ID != f.ids["wr:pub"] {
		f.t.Fatalf("runner-1 claimed %d, want wr:pub", got.ID)
	}
	f.now = f.now.Add(2 * time.Minute)
	_, err = st.CompleteWorkRequest(ctx, got.ID, w.ID, store.Completion{Result: model.ResultSuccess,
		Statistics: &model.RuntimeStatistics{Duration: 120}})
	f.must(err)
	got, err = st.ClaimWorkRequest(ctx, w.ID)
	f.must(err)
	if got.ID != f.ids["wr:priv"] {
		f.t.Fatalf("runner-1 claimed %d, want wr:priv", got.ID)
	}
	// a private request that finished: statistics to hide
	done := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "hushedtask", WorkspaceID: f.ids["priv"], CreatedBy: &admin.ID,
		Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
	f.must(st.SubmitWorkRequest(ctx, done))
	_, err = st.CompleteWorkRequest(ctx, done.ID, 0, store.Completion{Result: model.ResultFailure})
	f.must(err)
	f.ids["done:priv"] = done.ID
	for _, ws := range []struct{ key, name string }{{"pub", "public"}, {"priv", "hushed"}} {
		f.ids["art:"+ws.key] = f.upload(ws.key, "test:file", 0, "hello.txt", "hello from the "+ws.name+" workspace\n")
		f.ids["log:"+ws.key] = f.upload(ws.key, tasks.DebugLogsCategory, f.ids["wr:"+ws.key], tasks.LogFileName,
			"log of the "+ws.name+" request\n")
	}
}

// upload makes an artifact with one file through the API, as the admin,
// and returns its id.
func (f *farm) upload(ws, category string, wr int64, path, content string) int64 {
	f.t.Helper()
	sum := sha256.Sum256([]byte(content))
	made := ""
	if wr != 0 {
		made = fmt.Sprintf(`"created_by_work_request": %d, `, wr)
	}
	body := fmt.Sprintf(`{"category": %q, "workspace": %d, %s"files": [{"path": %q, "sha256": %q, "size": %d}]}`,
		category, f.ids[ws], made, path, hex.EncodeToString(sum[:]), len(content))
	var art struct{ ID int64 }
	f.apiCall("POST", "/api/1.0/artifacts/", "application/json", body, 201, &art)
	f.apiCall("PUT", "/api/1.0/artifacts/"+itoa(art.ID)+"/files/"+path, "application/octet-stream", content, 201, nil)
	return art.ID
}

func (f *farm) apiCall(method, path, ctype, body string, want int, out any) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	f.must(err)
	req.Header.Set("Authorization", "Token "+adminSecret)
	req.Header.Set("Content-Type", ctype)
	res, err := http.DefaultClient.Do(req)
	f.must(err)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		f.t.Fatalf("%s %s: %d, want %d: %s", method, path, res.StatusCode, want, b)
	}
	if out != nil {
		f.must(json.NewDecoder(bytes.NewReader(b)).Decode(out))
	}
}

// session opens a session with the token of who and returns its cookie
// value.
func (f *farm) session(who string) string {
	f.t.Helper()
	_, _, secret, err := f.st.OpenSession(context.Background(), f.tok[who], time.Hour)
	f.must(err)
	return secret
}

// answer is an answer of the dashboard.
type answer struct {
	status int
	header http.Header
	body   string
}

// get asks path with the session cookie (none when "") and the Accept
// header of a browser.
func (f *farm) get(path, cookie string) answer {
	f.t.Helper()
	req, err := http.NewRequest("GET", f.srv.URL+path, nil)
	f.must(err)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: "kiln_session", Value: cookie})
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	f.must(err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	f.must(err)
	return answer{res.StatusCode, res.Header, string(b)}
}

// seeded are the runs seedRuns made, for figures computed by hand.
type seeded struct {
	// Durations and Waits are the run times and queue waits of the
	// completed runs, Outcomes how the runs ended.
	Durations []time.Duration
	Waits     []time.Duration
	Outcomes  map[string]int
	// Day is the day they finished.
	Day time.Time
}

// seedRuns runs task "lintian" in workspace main a dozen times on a runner
// of its own, on the store's clock, with run times and waits that sit on
// bucket bounds (so that percentiles read from buckets are exact) and
// every outcome.
func (f *farm) seedRuns() seeded {
	f.t.Helper()
	ctx := context.Background()
	w := &model.Worker{Name: "stats-runner", WorkerType: model.WorkerExternal, Enabled: true}
	f.must(f.st.Workers().Create(ctx, w))
	_, _, err := f.st.ConnectWorker(ctx, w.ID, model.WorkerMetadata{Architectures: []string{"amd64"}, Backends: []string{"host"}})
	f.must(err)
	s := seeded{Outcomes: map[string]int{}}
	runs := []struct {
		wait, ran float64 // seconds
		result    model.Result
	}{
		{1, 1, model.ResultSuccess}, {1, 2, model.ResultSuccess}, {2, 2, model.ResultSuccess}, {2, 5, model.ResultFailure},
		{5, 10, model.ResultSuccess}, {5, 10, model.ResultError}, {10, 20, model.ResultSuccess}, {10, 50, model.ResultFailure},
		{20, 100, model.ResultSuccess}, {50, 1000, model.ResultSuccess}, {0.1, 0.5, model.ResultSkipped},
	}
	for _, r := range runs {
		wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "lintian", WorkspaceID: f.ids["pub"],
			Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
		f.must(f.st.SubmitWorkRequest(ctx, wr))
		f.now = f.now.Add(time.Duration(r.wait * float64(time.Second)))
		got, err := f.st.ClaimWorkRequest(ctx, w.ID)
		f.must(err)
		if got.ID != wr.ID {
			f.t.Fatalf("stats-runner claimed %d, want %d", got.ID, wr.ID)
		}
		f.now = f.now.Add(time.Duration(r.ran * float64(time.Second)))
		done, err := f.st.CompleteWorkRequest(ctx, wr.ID, w.ID, store.Completion{Result: r.result,
			Statistics: &model.RuntimeStatistics{Duration: r.ran}})
		f.must(err)
		s.Durations = append(s.Durations, time.Duration(*done.ExecutionTime)*time.Microsecond)
		s.Waits = append(s.Waits, done.StartedAt.Sub(done.CreatedAt))
		s.Outcomes[string(r.result)]++
		s.Day = done.CompletedAt.UTC().Truncate(24 * time.Hour)
	}
	aborted := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "lintian", WorkspaceID: f.ids["pub"],
		Data: json.RawMessage(`{"host_architecture": "s390x"}`)}
	f.must(f.st.SubmitWorkRequest(ctx, aborted))
	_, err = f.st.AbortWorkRequest(ctx, aborted.ID, "not needed", nil)
	f.must(err)
	s.Outcomes["aborted"]++
	return s
}
