package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/runner"
	"github.com/kiln-build/kiln/internal/scheduler"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

const adminSecret = "kiln_scheduler_test_admin"

// farm is a server in a test: store, scheduler and API on httptest.
type farm struct {
	t     *testing.T
	st    *store.SQL
	sched *scheduler.Scheduler
	srv   *httptest.Server
	ws    *model.Workspace
	admin int64
	log   *slog.Logger
}

func newFarm(t *testing.T, dsn string, heartbeat time.Duration) *farm {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Bootstrap(ctx, adminSecret, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	sched, err := scheduler.New(st, scheduler.Config{HeartbeatTimeout: heartbeat, ClaimInterval: 200 * time.Millisecond,
		ServerWorkerName: "server-test", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	a := api.New(st, logger, api.Options{Dispatcher: sched})
	srv := httptest.NewServer(a.Handler())
	done := make(chan struct{})
	go func() { defer close(done); sched.Run(ctx) }()
	t.Cleanup(func() {
		sched.Close()
		cancel()
		<-done
		srv.Close()
		st.Close()
	})
	admin, err := st.Users().Lookup(ctx, store.AdminUsername, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := &model.Scope{Name: "debian"}
	must(t, st.Scopes().Create(ctx, sc))
	ws := &model.Workspace{Name: "main", ScopeID: sc.ID, Public: true}
	must(t, st.Workspaces().Create(ctx, ws))
	return &farm{t: t, st: st, sched: sched, srv: srv, ws: ws, admin: admin.ID, log: logger}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// submit posts a work request through the API as admin.
func (f *farm) submit(typ model.TaskType, name string, data map[string]any, deps ...int64) *model.WorkRequest {
	f.t.Helper()
	body, _ := json.Marshal(map[string]any{"task_type": typ, "task_name": name, "workspace": f.ws.ID, "task_data": data,
		"dependencies": append([]int64{}, deps...)})
	var wr model.WorkRequest
	f.call("POST", "/api/1.0/work-requests/", string(body), 201, &wr)
	return &wr
}

func (f *farm) call(method, path, body string, want int, out any) {
	f.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, r)
	req.Header.Set("Authorization", "Token "+adminSecret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		f.t.Fatalf("%s %s: want %d, got %d: %s", method, path, want, resp.StatusCode, b)
	}
	if out != nil {
		if raw, ok := out.(*[]byte); ok {
			*raw = b
			return
		}
		if err := json.Unmarshal(b, out); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *farm) get(id int64) *model.WorkRequest {
	f.t.Helper()
	wr, err := f.st.WorkRequests().Get(context.Background(), id, nil)
	must(f.t, err)
	return wr
}

// waitFinished waits until every request has finished.
func (f *farm) waitFinished(timeout time.Duration, ids ...int64) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for _, id := range ids {
		for {
			wr := f.get(id)
			if wr.Status.Finished() {
				break
			}
			if time.Now().After(deadline) {
				f.t.Fatalf("work request %d still %s after %s", id, wr.Status, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// worker creates an enabled worker and returns its token.
func (f *farm) worker(name string) string {
	f.t.Helper()
	var nw struct {
		Token struct {
			Secret string `json:"secret"`
		} `json:"token"`
	}
	f.call("POST", "/api/1.0/workers/", fmt.Sprintf(`{"name": %q}`, name), 201, &nw)
	return nw.Token.Secret
}

// startRunner runs an in-process runner until the test ends.
func (f *farm) startRunner(name, token string, archs ...string) (stop func()) {
	f.t.Helper()
	return f.startConcurrentRunner(name, token, 1, archs...)
}

// startConcurrentRunner starts a runner that runs up to concurrent tasks
// at once.
func (f *farm) startConcurrentRunner(name, token string, concurrent int, archs ...string) (stop func()) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runner.Run(ctx, runner.Config{Server: f.srv.URL, Token: token, Name: name, WorkDir: f.t.TempDir(),
			Architectures: archs, Concurrent: concurrent, ShutdownGrace: 5 * time.Second, MaxBackoff: time.Second, Logger: f.log})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					f.t.Errorf("runner %s: %v", name, err)
				}
			case <-time.After(20 * time.Second):
				f.t.Errorf("runner %s did not stop", name)
			}
		})
	}
	f.t.Cleanup(stop)
	return stop
}

func TestWaitTasksCompleteOnTime(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn, 5*time.Second)
		start := time.Now()
		short := f.submit(model.TaskWait, "delay", map[string]any{"delay": 0.4})
		long := f.submit(model.TaskWait, "delay", map[string]any{"delay": "1h"})
		f.waitFinished(5*time.Second, short.ID)
		took := time.Since(start)
		got := f.get(short.ID)
		if got.Result != model.ResultSuccess || took < 400*time.Millisecond || took > 3*time.Second {
			t.Fatalf("wait of 0.4 s finished %s/%s after %s", got.Status, got.Result, took)
		}
		if ran := got.CompletedAt.Sub(*got.StartedAt); ran < 400*time.Millisecond {
			t.Fatalf("ran %s", ran)
		}
		l := f.get(long.ID)
		if l.Status != model.StatusRunning || l.DueAt == nil || !l.DueAt.Equal(l.StartedAt.Add(time.Hour)) {
			t.Fatalf("hour-long wait is %s, started %v, due %v", l.Status, l.StartedAt, l.DueAt)
		}
		// a wait that depends on another starts its timer when unblocked
		dep := f.submit(model.TaskWait, "delay", map[string]any{"delay": 0}, short.ID)
		f.waitFinished(5*time.Second, dep.ID)

		// Wait requests started by a kiln from before due_at: the
		// scheduler works out when they are due from their start
		ctx := context.Background()
		started := time.Now().Add(-time.Minute).UnixMicro()
		if _, err := f.st.DB().ExecContext(ctx, "UPDATE work_requests SET due_at = NULL, started_at = $1 WHERE id = $2", started, long.ID); err != nil {
			t.Fatal(err)
		}
		old := f.submit(model.TaskWait, "delay", map[string]any{"delay": 30})
		deadline := time.Now().Add(5 * time.Second)
		for f.get(old.ID).Status != model.StatusRunning && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if _, err := f.st.DB().ExecContext(ctx, "UPDATE work_requests SET due_at = NULL, started_at = $1 WHERE id = $2", started, old.ID); err != nil {
			t.Fatal(err)
		}
		f.sched.Poke()
		f.waitFinished(5*time.Second, old.ID)
		for time.Now().Before(deadline) {
			if l = f.get(long.ID); l.DueAt != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if l.Status != model.StatusRunning || l.DueAt == nil || l.DueAt.UnixMicro() != started+time.Hour.Microseconds() {
			t.Fatalf("hour-long wait of an older kiln is %s, due %v, want running and due an hour after its start", l.Status, l.DueAt)
		}
	})
}

func TestServerTaskAddToCollection(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn, 5*time.Second)
		coll := &model.Collection{Category: "debian:suite", Name: "bookworm", WorkspaceID: f.ws.ID}
		must(t, f.st.Collections().Create(ctx, coll))
		art := &model.Artifact{Category: "debian:binary-package", WorkspaceID: f.ws.ID}
		must(t, f.st.Artifacts().Create(ctx, art))
		wr := f.submit(model.TaskServer, "add-to-collection", map[string]any{"collection": coll.ID, "artifact": art.ID, "name": "hello_1.0"})
		f.waitFinished(5*time.Second, wr.ID)
		got := f.get(wr.ID)
		if got.Result != model.ResultSuccess || got.WorkerID == nil {
			t.Fatalf("server task: %+v %s", got, got.Output)
		}
		w, _ := f.st.Workers().Get(ctx, *got.WorkerID, nil)
		if w.WorkerType != model.WorkerServer || w.ConnectedAt == nil {
			t.Fatalf("ran on %+v", w)
		}
		items, _ := f.st.ListCollectionItems(ctx, coll.ID, store.Query{})
		if len(items) != 1 || items[0].Name != "hello_1.0" || *items[0].ArtifactID != art.ID {
			t.Fatalf("items: %+v", items)
		}
	})
}

func TestLostWorkerIsRequeued(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn, 600*time.Millisecond)
		w := &model.Worker{Name: "ghost", WorkerType: model.WorkerExternal, Enabled: true}
		must(t, f.st.Workers().Create(ctx, w))
		_, _, err := f.st.ConnectWorker(ctx, w.ID, model.WorkerMetadata{Architectures: []string{"amd64"}, Backends: []string{"host"}})
		must(t, err)
		wr := f.submit(model.TaskWorker, "noop", map[string]any{"host_architecture": "amd64"})
		claimed, err := f.st.ClaimWorkRequest(ctx, w.ID)
		must(t, err)
		if claimed.ID != wr.ID {
			t.Fatalf("claimed %d", claimed.ID)
		}
		deadline := time.Now().Add(5 * time.Second)
		for f.get(wr.ID).Status != model.StatusPending {
			if time.Now().After(deadline) {
				t.Fatalf("not requeued: %+v", f.get(wr.ID))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got := f.get(wr.ID); got.Retries != 1 || got.WorkerID != nil {
			t.Fatalf("requeued: %+v", got)
		}
		if g, _ := f.st.Workers().Get(ctx, w.ID, nil); g.ConnectedAt != nil {
			t.Fatal("lost worker still marked connected")
		}
	})
}
