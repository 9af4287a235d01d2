package openmetrics

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// Accept headers of real scrapers: Prometheus 2.42 asking for OpenMetrics
// first, and a plain text client.
const (
	acceptOpenMetrics = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
	acceptText        = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
)

// testClock is a settable clock shared by the store and the endpoint.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// farmNow is the fixed time of the golden farm's snapshot.
var farmNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// openStore opens a migrated store on dsn with clk as its clock.
func openStore(t *testing.T, dsn string, clk *testClock) *store.SQL {
	t.Helper()
	s, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.SetClock(clk.Now)
	return s
}

// scrapeHTTP requests the handler with an Accept header and returns the
// recorded response.
func scrapeHTTP(t *testing.T, h http.Handler, accept string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", "/api/1.0/open-metrics/", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: status %d: %s", rec.Code, rec.Body)
	}
	return rec
}

// farm builds objects through the real store and fails the test on any
// error, so that farm descriptions read as a list of facts.
type farm struct {
	t   *testing.T
	ctx context.Context
	s   *store.SQL
	clk *testClock
}

func (f *farm) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *farm) scope(name string) int64 {
	f.t.Helper()
	sc := &model.Scope{Name: name}
	f.must(f.s.Scopes().Create(f.ctx, sc))
	return sc.ID
}

func (f *farm) workspace(scope int64, name string, public bool, expires time.Duration) int64 {
	f.t.Helper()
	w := &model.Workspace{ScopeID: scope, Name: name, Public: public}
	if expires > 0 {
		d := model.Duration(expires)
		w.ExpirationDelay = &d
	}
	f.must(f.s.Workspaces().Create(f.ctx, w))
	return w.ID
}

func (f *farm) user(name string, issuers map[string]string) int64 {
	f.t.Helper()
	u := &model.User{Username: name, Active: true}
	f.must(f.s.Users().Create(f.ctx, u))
	for issuer, subject := range issuers {
		f.must(f.s.Identities().Create(f.ctx, &model.Identity{UserID: u.ID, Issuer: issuer, Subject: subject}))
	}
	return u.ID
}

func (f *farm) deactivate(user int64) {
	f.t.Helper()
	_, err := f.s.Users().Update(f.ctx, user, nil, func(u *model.User) error { u.Active = false; return nil })
	f.must(err)
}

func (f *farm) worker(name string, typ model.WorkerType, pool *int64, meta model.WorkerMetadata, connect bool) int64 {
	f.t.Helper()
	w := &model.Worker{Name: name, WorkerType: typ, Enabled: true, PoolID: pool, Metadata: meta}
	f.must(f.s.Workers().Create(f.ctx, w))
	if connect {
		_, _, err := f.s.ConnectWorker(f.ctx, w.ID, meta)
		f.must(err)
	}
	return w.ID
}

func external(host string, backends []string, archs ...string) model.WorkerMetadata {
	return model.WorkerMetadata{Architectures: archs, HostArchitecture: host, Backends: backends, CPUCount: 4}
}

// submit creates a work request; data may be nil.
func (f *farm) submit(typ model.TaskType, name string, ws int64, by, parent *int64, data map[string]any, deps ...int64) int64 {
	f.t.Helper()
	raw, _ := json.Marshal(data)
	if data == nil {
		raw = nil
	}
	wr := &model.WorkRequest{TaskType: typ, TaskName: name, WorkspaceID: ws, CreatedBy: by, ParentID: parent, Data: raw,
		Dependencies: deps, MaxRetries: 3}
	f.must(f.s.SubmitWorkRequest(f.ctx, wr))
	return wr.ID
}

// claim gives worker its next request and checks it is want.
func (f *farm) claim(worker, want int64) {
	f.t.Helper()
	wr, err := f.s.ClaimWorkRequest(f.ctx, worker)
	f.must(err)
	if wr.ID != want {
		f.t.Fatalf("worker %d claimed work request %d, want %d", worker, wr.ID, want)
	}
}

func (f *farm) complete(id, worker int64, result model.Result, duration float64) {
	f.t.Helper()
	c := store.Completion{Result: result}
	if duration > 0 {
		c.Statistics = &model.RuntimeStatistics{Duration: duration}
	}
	_, err := f.s.CompleteWorkRequest(f.ctx, id, worker, c)
	f.must(err)
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// artifact creates an artifact with files of the given sizes (named
// file0, file1, …) and uploads them to store (0: leave them declared only).
func (f *farm) artifact(ws int64, category string, data map[string]any, fileStore int64, sizes ...int64) int64 {
	f.t.Helper()
	var raw json.RawMessage
	if data != nil {
		raw, _ = json.Marshal(data)
	}
	a := &model.Artifact{WorkspaceID: ws, Category: category, Data: raw}
	for i, size := range sizes {
		p := "file" + string(rune('0'+i))
		a.Files = append(a.Files, model.ArtifactFile{Path: p, SHA256: sha(category + p + string(raw)), Size: size})
	}
	f.must(f.s.Artifacts().Create(f.ctx, a))
	if fileStore != 0 {
		for _, file := range a.Files {
			f.must(f.s.AttachFile(f.ctx, a.ID, file.Path, fileStore, nil))
		}
	}
	return a.ID
}

func (f *farm) collection(ws int64, category, name string, items ...string) int64 {
	f.t.Helper()
	c := &model.Collection{WorkspaceID: ws, Category: category, Name: name}
	f.must(f.s.Collections().Create(f.ctx, c))
	for _, it := range items {
		f.must(f.s.AddCollectionItem(f.ctx, &model.CollectionItem{CollectionID: c.ID, Name: it, Category: "debian:binary-package",
			Data: json.RawMessage(`{"note": "` + it + `"}`)}, nil))
	}
	return c.ID
}

func (f *farm) token(tmpl model.Token, useAt ...time.Time) {
	f.t.Helper()
	nt, err := f.s.CreateToken(f.ctx, tmpl)
	f.must(err)
	for _, at := range useAt {
		f.clk.Set(at)
		_, err := f.s.Authenticate(f.ctx, nt.Secret)
		f.must(err)
	}
}

func ptr[T any](v T) *T { return &v }

// buildGoldenFarm builds the fixed farm of the golden files: two scopes,
// public and private workspaces, active, inactive and identity-less users,
// every kind of worker, work requests in every status, artifacts, assets,
// collections, templates, tokens and file stores with and without a
// maximum. The clock ends at farmNow.
func buildGoldenFarm(t *testing.T, s *store.SQL, clk *testClock) {
	t.Helper()
	f := &farm{t: t, ctx: context.Background(), s: s, clk: clk}
	ago := func(d time.Duration) time.Time { return farmNow.Add(-d) }
	clk.Set(ago(500 * day))

	ok, err := s.Bootstrap(f.ctx, "kiln_golden-admin-secret", t.TempDir())
	if err != nil || !ok {
		t.Fatalf("bootstrap: %v %v", ok, err)
	}
	admin, err := s.Users().Lookup(f.ctx, store.AdminUsername, nil)
	f.must(err)
	system, err := s.Users().Lookup(f.ctx, store.SystemUsername, nil)
	f.must(err)
	def, err := s.DefaultFileStore(f.ctx)
	f.must(err)
	archive := &model.FileStore{Name: "archive", Backend: model.BackendS3, MaxSize: ptr(int64(1 << 30)),
		Configuration: json.RawMessage(`{"bucket": "kiln-archive"}`)}
	f.must(s.FileStores().Create(f.ctx, archive))

	debian, kali := f.scope("debian"), f.scope("kali")
	main := f.workspace(debian, "main", true, 0)
	embargoed := f.workspace(debian, "security-embargo", false, 0)
	experimental := f.workspace(debian, "experimental", true, 30*day)
	rolling := f.workspace(kali, "rolling", true, 0)
	f.workspace(kali, "internal", false, 90*day)

	alice := f.user("alice", map[string]string{"salsa.debian.org": "alice-salsa", "accounts.google.com": "alice-google"})
	bob := f.user("bob", map[string]string{"salsa.debian.org": "bob-salsa"})
	carol := f.user("carol", map[string]string{"salsa.debian.org": "carol-salsa"})
	dave := f.user("dave", nil) // creates workflows without any identity
	f.user("erin", map[string]string{"gitlab.com": "erin-gitlab"})

	f.must(s.Groups().Create(f.ctx, &model.Group{ScopeID: debian, Name: "debian-devs", Members: []int64{alice, bob}}))
	f.must(s.Groups().Create(f.ctx, &model.Group{ScopeID: debian, Name: "ci-run-42", Ephemeral: true}))
	f.must(s.Groups().Create(f.ctx, &model.Group{ScopeID: kali, Name: "kali-team", Members: []int64{dave}}))

	// Root workflows: the histograms count each (user, scope) once, by the
	// most recent one.
	clk.Set(ago(400 * day))
	f.submit(model.TaskWorkflow, "sbuild", embargoed, &carol, nil, nil)
	f.deactivate(carol)
	clk.Set(ago(100 * day))
	f.submit(model.TaskWorkflow, "sbuild", rolling, &dave, nil, nil)
	clk.Set(ago(40 * day))
	f.submit(model.TaskWorkflow, "sbuild", main, &bob, nil, nil)
	clk.Set(ago(10 * day))
	aliceWF := f.submit(model.TaskWorkflow, "sbuild", main, &alice, nil, nil)
	clk.Set(ago(5 * day))
	bobWF := f.submit(model.TaskWorkflow, "debdiff", main, &bob, nil, nil)
	clk.Set(ago(2 * day))
	f.submit(model.TaskWorkflow, "sbuild", rolling, &alice, nil, nil)
	clk.Set(ago(36 * time.Hour))
	f.submit(model.TaskWorkflow, "sbuild", experimental, &system.ID, nil, nil) // the system user is never counted
	clk.Set(ago(1 * day))
	f.submit(model.TaskWorkflow, "reverse-deps", main, &bob, &bobWF, nil) // a sub-workflow is not a root

	// Workers: external with several architectures, one never connected,
	// one deleted (its label set stays at 0), a server worker and a pool
	// worker.
	pool := &model.WorkerPool{Name: "cloud-amd64", Provider: model.ProviderExec, Enabled: true, Architectures: []string{"amd64"},
		MaxInstances: 1, IdleTimeout: model.Duration(time.Minute), StartupTimeout: model.Duration(time.Minute)}
	f.must(s.WorkerPools().Create(f.ctx, pool))
	amd := f.worker("amd64-1", model.WorkerExternal, nil, external("amd64", []string{"unshare"}, "amd64", "i386"), true)
	f.worker("hurd-1", model.WorkerExternal, nil, external("hurd-i386", nil, "hurd-i386"), true)
	f.worker("arm-1", model.WorkerExternal, nil, external("arm64", []string{"unshare"}, "arm64", "armhf"), false)
	gone := f.worker("s390x-1", model.WorkerExternal, nil, external("s390x", nil, "s390x"), false)
	f.must(s.Workers().Delete(f.ctx, gone, nil))
	srv := f.worker("server-1", model.WorkerServer, nil, model.WorkerMetadata{}, true)

	// The pool ran an instance for an hour; its worker stays connected
	// (an admin enabled it again) and runs work.
	clk.Set(ago(5 * time.Hour))
	first, _, err := s.StartPoolInstance(f.ctx, pool.ID)
	f.must(err)
	cloud := first.WorkerID
	cloudMeta := external("amd64", []string{"unshare"}, "amd64")
	_, _, err = s.ConnectWorker(f.ctx, cloud, cloudMeta)
	f.must(err)
	clk.Set(ago(4 * time.Hour))
	f.must(s.StopPoolInstance(f.ctx, first.ID, ago(4*time.Hour), "idle_timeout"))
	_, err = s.Workers().Update(f.ctx, cloud, nil, func(w *model.Worker) error { w.Enabled = true; return nil })
	f.must(err)

	amd64 := map[string]any{"host_architecture": "amd64", "backend": "unshare"}
	clk.Set(ago(3 * time.Hour))
	private := f.submit(model.TaskWorker, "sbuild", embargoed, &alice, nil,
		map[string]any{"host_architecture": "amd64", "backend": "unshare", "source": "embargoed-fix"})
	f.claim(cloud, private)
	done := f.submit(model.TaskWorker, "sbuild", main, &alice, &aliceWF, amd64)
	f.claim(amd, done)
	clk.Set(ago(1 * time.Hour))
	f.complete(private, cloud, model.ResultFailure, 0) // clock-based: 2 h
	f.complete(done, amd, model.ResultSuccess, 42.5)   // measured by the runner
	mirror := f.submit(model.TaskServer, "apt-mirror", main, &admin.ID, nil, nil)
	f.claim(srv, mirror)
	clk.Set(ago(45 * time.Minute))
	f.complete(mirror, srv, model.ResultSuccess, 0) // 15 min

	clk.Set(ago(30 * time.Minute))
	// a second instance, on the same worker, still running at the snapshot
	f.must(s.DisconnectWorker(f.ctx, cloud))
	second, _, err := s.StartPoolInstance(f.ctx, pool.ID)
	f.must(err)
	if second.WorkerID != cloud {
		f.t.Fatalf("the second instance runs worker %d, want %d", second.WorkerID, cloud)
	}
	_, _, err = s.ConnectWorker(f.ctx, cloud, cloudMeta)
	f.must(err)
	running := f.submit(model.TaskWorker, "sbuild", main, &alice, &aliceWF, amd64)
	f.claim(amd, running)
	queued := f.submit(model.TaskWorker, "sbuild", main, &bob, nil, map[string]any{"host_architecture": "amd64"})
	f.submit(model.TaskWorker, "sbuild", main, &bob, nil, amd64, queued) // blocked on it
	f.submit(model.TaskWorker, "sbuild", main, &bob, nil, map[string]any{"host_architecture": "hurd-i386", "backend": "unshare"})
	f.submit(model.TaskWorker, "lintian", rolling, &dave, nil, map[string]any{"host_architecture": "arm64", "backend": "unshare"})
	aborted := f.submit(model.TaskWorker, "autopkgtest", main, &bob, nil, map[string]any{"host_architecture": "i386", "backend": "unshare"})
	_, err = s.AbortWorkRequest(f.ctx, aborted, "superseded by a new upload", nil)
	f.must(err)
	f.submit(model.TaskServer, "apt-mirror", main, &admin.ID, nil, nil)
	f.submit(model.TaskWait, "delay", main, &bob, &bobWF, map[string]any{"delay_until": "2026-03-02T00:00:00Z"})

	// Artifacts, with files uploaded to both file stores.
	clk.Set(ago(20 * time.Minute))
	f.artifact(main, "debian:source-package", map[string]any{"name": "hello"}, def.ID, 1200, 350_000)
	f.artifact(main, "debian:binary-package", map[string]any{"name": "hello"}, archive.ID, 60_000)
	f.artifact(main, "kiln:work-request-debug-logs", nil, def.ID, 5_000)
	f.artifact(embargoed, "debian:source-package", map[string]any{"name": "embargoed-fix"}, archive.ID, 2<<20)
	f.artifact(rolling, "debian:binary-package", map[string]any{"name": "kali-tools"}, 0)
	upload := f.artifact(main, "debian:upload", map[string]any{"name": "hello"}, 0, 900)
	_, err = s.DeleteArtifact(f.ctx, upload, nil) // its label set stays, at 0
	f.must(err)

	f.must(s.Assets().Create(f.ctx, &model.Asset{WorkspaceID: main, Category: "debusine:signing-key",
		Data: json.RawMessage(`{"fingerprint": "ABCD"}`)}))
	f.must(s.Assets().Create(f.ctx, &model.Asset{WorkspaceID: rolling, Category: "debusine:cloud-provider-account",
		Data: json.RawMessage(`{"provider": "aws"}`)}))

	f.collection(main, "debian:suite", "bookworm", "hello_1.0", "hello_1.1", "base-files_13")
	f.collection(main, "debian:suite", "trixie")
	f.collection(embargoed, "debian:suite", "embargo", "fix_1.0")
	kaliItems := make([]string, 12)
	for i := range kaliItems {
		kaliItems[i] = "env-" + string(rune('a'+i))
	}
	f.collection(rolling, "debian:environments", "kali-environments", kaliItems...)

	f.must(s.WorkflowTemplates().Create(f.ctx, &model.WorkflowTemplate{WorkspaceID: main, Name: "sbuild-amd64", TaskName: "sbuild"}))
	f.must(s.WorkflowTemplates().Create(f.ctx, &model.WorkflowTemplate{WorkspaceID: main, Name: "debdiff", TaskName: "debdiff"}))
	f.must(s.WorkflowTemplates().Create(f.ctx, &model.WorkflowTemplate{WorkspaceID: rolling, Name: "kali-sbuild", TaskName: "sbuild"}))

	// Tokens: used at various times, disabled, never used.
	f.token(model.Token{UserID: &alice, Enabled: true, Comment: "alice laptop"}, ago(2*day))
	f.token(model.Token{UserID: &bob, Enabled: false, Comment: "bob old"})
	f.token(model.Token{WorkerID: &amd, Enabled: true}, ago(5*time.Minute))
	f.token(model.Token{WorkerID: &cloud, Enabled: true}, ago(40*day))
	f.token(model.Token{Enabled: true, ScopeID: &debian, Comment: "scope-restricted reader"})
	clk.Set(ago(3 * time.Hour))
	_, err = s.Authenticate(f.ctx, "kiln_golden-admin-secret")
	f.must(err)

	clk.Set(farmNow)
}
