package scheduler_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/livelog"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/scheduler"
	"github.com/kiln-build/kiln/internal/signal"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// newReplica starts another server process of the farm's database, as
// internal/server wires one: its own pool, signal bus (listening on its
// own connection), live-log relay, scheduler and API. Idle runners look
// at the queue every claimEvery when nothing wakes them.
func (f *farm) newReplica(dsn string, heartbeat, claimEvery time.Duration) *farm {
	t := f.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, dsn)
	must(t, err)
	bus, err := signal.NewPostgres(dsn, st.DB(), signal.Options{Logger: f.log})
	must(t, err)
	logs, err := livelog.New(st, bus, livelog.Options{Logger: f.log})
	must(t, err)
	sched, err := scheduler.New(st, scheduler.Config{HeartbeatTimeout: heartbeat, ClaimInterval: claimEvery,
		ServerWorkerName: fmt.Sprintf("server-replica-%p", st), Signals: bus, LiveLogs: logs, Logger: f.log})
	must(t, err)
	srv := httptest.NewServer(api.New(st, f.log, api.Options{Dispatcher: sched}).Handler())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); bus.Run(ctx) }()
	go func() { defer wg.Done(); sched.Run(ctx) }()
	t.Cleanup(func() {
		sched.Close()
		cancel()
		wg.Wait()
		srv.Close()
		st.Close()
	})
	select {
	case <-bus.Listening():
	case <-time.After(10 * time.Second):
		t.Fatalf("replica's bus does not listen: %v", bus.Err())
	}
	return &farm{t: t, st: st, sched: sched, srv: srv, ws: f.ws, admin: f.admin, log: f.log}
}

// TestReplicasSignalEachOther: two server processes on one PostgreSQL
// database whose idle runners would look at the queue only once an hour.
// Work submitted on one starts at once on a runner connected to the
// other, which runs two tasks at once; the two tasks' logs are followed
// through the first while they run, each its own; aborting one there
// stops it on its runner at once, not at the runner's next heartbeat,
// and leaves the other running; and enabling a worker there gives its
// runner, connected to the other, the work that waited for it.
func TestReplicasSignalEachOther(t *testing.T) {
	dsn := testdb.Postgres(t)
	const heartbeat = 30 * time.Second // runners heartbeat every 10 s
	seed := newFarm(t, dsn, heartbeat)
	a := seed.newReplica(dsn, heartbeat, time.Hour)
	b := seed.newReplica(dsn, heartbeat, time.Hour)

	b.startConcurrentRunner("on-b", a.worker("on-b"), 2, "amd64")
	awaitIdle(t, a, "on-b")

	// backend host: $$ is the pid this test sees
	type task struct {
		dir string
		wr  *model.WorkRequest
		pid int
	}
	tasks := make([]*task, 2)
	for i := range tasks {
		dir := t.TempDir()
		script := fmt.Sprintf(`echo $$ > %[1]s/pid; echo started %[2]d; while [ ! -e %[1]s/go ]; do sleep 0.05; done; echo finished %[2]d`, dir, i)
		submitted := time.Now()
		wr := a.submit(model.TaskWorker, "command", map[string]any{"host_architecture": "amd64", "backend": "host", "script": script})
		got := awaitStatus(t, a, wr.ID, model.StatusRunning, 10*time.Second)
		if took := time.Since(submitted); took > 5*time.Second {
			t.Fatalf("the runner of replica B started work submitted on A after %s: signals did not wake it", took)
		}
		t.Logf("submitted on A, running on B's runner after %s (queue wait %s)", time.Since(submitted).Round(time.Millisecond),
			got.StartedAt.Sub(got.CreatedAt).Round(time.Microsecond))
		tasks[i] = &task{dir: dir, wr: wr}
	}

	// each followed through A, the replica the runner is not connected
	// to: its own log only
	for i, tk := range tasks {
		deadline := time.Now().Add(10 * time.Second)
		for {
			var log []byte
			a.call("GET", fmt.Sprintf("/api/1.0/work-requests/%d/logs/", tk.wr.ID), "", 200, &log)
			if strings.Contains(string(log), "started") {
				if !strings.HasSuffix(string(log), fmt.Sprintf("\nstarted %d\n", i)) || strings.Count(string(log), "started") != 1 {
					t.Fatalf("the live log of task %d read through replica A is %q, want its own first line", i, log)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the live log of task %d read through replica A is %q, want its first line", i, log)
			}
			time.Sleep(50 * time.Millisecond)
		}
		pidText, err := os.ReadFile(filepath.Join(tk.dir, "pid"))
		must(t, err)
		tk.pid, err = strconv.Atoi(strings.TrimSpace(string(pidText)))
		must(t, err)
	}

	// the first aborted through A: B tells its runner, which stops that
	// script and runs the other on
	aborted := time.Now()
	a.call("POST", fmt.Sprintf("/api/1.0/work-requests/%d/abort/", tasks[0].wr.ID), `{"reason": "test"}`, 200, nil)
	for syscall.Kill(tasks[0].pid, 0) == nil {
		if time.Since(aborted) > 5*time.Second {
			t.Fatal("the task still runs 5 s after it was aborted on the other replica (heartbeats come every 10 s)")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("aborted on A, stopped on B's runner after %s", time.Since(aborted).Round(time.Millisecond))
	if err := syscall.Kill(tasks[1].pid, 0); err != nil {
		t.Fatalf("the other task of the runner stopped too: %v", err)
	}
	if s := a.get(tasks[1].wr.ID).Status; s != model.StatusRunning {
		t.Fatalf("the other task of the runner is %s", s)
	}
	must(t, os.WriteFile(filepath.Join(tasks[1].dir, "go"), nil, 0o600))
	if got := awaitStatus(t, a, tasks[1].wr.ID, model.StatusCompleted, 10*time.Second); got.Result != model.ResultSuccess {
		t.Fatalf("the other task ended %s", got.Result)
	}
	var log []byte
	a.call("GET", fmt.Sprintf("/api/1.0/work-requests/%d/logs/", tasks[1].wr.ID), "", 200, &log)
	if !strings.Contains(string(log), "\nstarted 1\nfinished 1\n") || strings.Contains(string(log), "started 0") {
		t.Fatalf("the stored log of the other task is %q", log)
	}

	// a request for arm64 waits for a disabled worker connected to B;
	// enabling it through A gives it the request at once
	waiting := a.submit(model.TaskWorker, "noop", map[string]any{"host_architecture": "arm64"})
	var nw struct {
		ID    int64 `json:"id"`
		Token struct {
			Secret string `json:"secret"`
		} `json:"token"`
	}
	a.call("POST", "/api/1.0/workers/", `{"name": "arm-on-b", "enabled": false}`, 201, &nw)
	b.startRunner("arm-on-b", nw.Token.Secret, "arm64")
	awaitConnected(t, a, "arm-on-b")
	time.Sleep(100 * time.Millisecond) // its session has looked at the queue, and waits
	if s := a.get(waiting.ID).Status; s != model.StatusPending {
		t.Fatalf("the request for a disabled worker is %s", s)
	}
	enabled := time.Now()
	a.call("PATCH", fmt.Sprintf("/api/1.0/workers/%d/", nw.ID), `{"enabled": true}`, 200, nil)
	awaitStatus(t, a, waiting.ID, model.StatusCompleted, 10*time.Second)
	if took := time.Since(enabled); took > 5*time.Second {
		t.Fatalf("the worker enabled on A started its work on B after %s", took)
	}
}

// awaitStatus waits until request id has status s, and returns it.
func awaitStatus(t *testing.T, f *farm, id int64, s model.Status, timeout time.Duration) *model.WorkRequest {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		wr := f.get(id)
		if wr.Status == s {
			return wr
		}
		if time.Now().After(deadline) {
			t.Fatalf("work request %d is %s after %s, want %s", id, wr.Status, timeout, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// awaitConnected waits until the worker called name is connected.
func awaitConnected(t *testing.T, f *farm, name string) *model.Worker {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ws, err := f.st.Workers().List(context.Background(), store.Query{Filter: map[string]string{"name": name}})
		must(t, err)
		if len(ws) == 1 && ws[0].ConnectedAt != nil {
			return &ws[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %s did not connect", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// awaitIdle waits until the runner called name is connected and its
// session has had a first look at the (empty) queue.
func awaitIdle(t *testing.T, f *farm, name string) {
	t.Helper()
	awaitConnected(t, f, name)
	time.Sleep(100 * time.Millisecond)
}

// TestDeadReplicasServerTasksMoveOn: a replica died while its server
// worker ran a Server task. Its server worker, silent, is judged lost
// like a runner, and the task runs on a surviving replica's server
// worker (before, it stayed running until a replica of the same host and
// port came back).
func TestDeadReplicasServerTasksMoveOn(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn, time.Second)
		dead := &model.Worker{Name: "server-dead-replica-8420", WorkerType: model.WorkerServer, Enabled: true}
		must(t, f.st.Workers().Create(ctx, dead))
		_, _, err := f.st.ConnectWorker(ctx, dead.ID, model.WorkerMetadata{})
		must(t, err)
		coll := &model.Collection{Category: "debian:suite", Name: "trixie", WorkspaceID: f.ws.ID}
		must(t, f.st.Collections().Create(ctx, coll))
		art := &model.Artifact{Category: "debian:binary-package", WorkspaceID: f.ws.ID}
		must(t, f.st.Artifacts().Create(ctx, art))
		// the dead replica's worker claimed it while the live one was
		// disabled (so that it could not take it first)
		live := awaitConnected(t, f, "server-test")
		enable := func(on bool) {
			_, err := f.st.Workers().Update(ctx, live.ID, nil, func(w *model.Worker) error { w.Enabled = on; return nil })
			must(t, err)
		}
		enable(false)
		wr := &model.WorkRequest{TaskType: model.TaskServer, TaskName: "add-to-collection", WorkspaceID: f.ws.ID, MaxRetries: 3,
			Data: []byte(fmt.Sprintf(`{"collection": %d, "artifact": %d, "name": "hello_1.0"}`, coll.ID, art.ID))}
		must(t, f.st.SubmitWorkRequest(ctx, wr))
		claimed, err := f.st.ClaimWorkRequest(ctx, dead.ID)
		must(t, err)
		if claimed.ID != wr.ID {
			t.Fatalf("the dead replica's worker claimed %d, want %d", claimed.ID, wr.ID)
		}
		enable(true)
		f.waitFinished(10*time.Second, wr.ID)
		got := f.get(wr.ID)
		if got.Result != model.ResultSuccess || got.WorkerID == nil || *got.WorkerID == dead.ID || got.Retries != 1 {
			t.Fatalf("the dead replica's Server task ended %s/%s on worker %v after %d retries, want success on the live one after 1",
				got.Status, got.Result, got.WorkerID, got.Retries)
		}
		if w, _ := f.st.Workers().Get(ctx, dead.ID, nil); w.ConnectedAt != nil {
			t.Fatal("the dead replica's server worker is still marked connected")
		}
	})
}
