package scheduler_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/runner"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestRunnersInProcess drives two in-process runners through the real
// protocol: work lands by architecture, dependencies hold, outputs and logs
// come back as artifacts, statistics are kept.
func TestRunnersInProcess(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn, 3*time.Second)
		f.startRunner("x86", f.worker("x86"), "amd64", "i386")
		f.startRunner("arm", f.worker("arm"), "arm64")

		first := f.submit(model.TaskWorker, "command", map[string]any{"host_architecture": "i386",
			"script": "echo built on $KILN_HOST_ARCHITECTURE; printf 'payload' > out.bin", "outputs": []map[string]any{{"path": "out.bin", "category": "test:bin"}}})
		second := f.submit(model.TaskWorker, "command", map[string]any{"host_architecture": "arm64", "script": "echo second"}, first.ID)
		fail := f.submit(model.TaskWorker, "command", map[string]any{"host_architecture": "amd64", "script": "echo oops >&2; exit 2"})
		noop := f.submit(model.TaskWorker, "noop", map[string]any{"host_architecture": "arm64"})
		f.waitFinished(30*time.Second, first.ID, second.ID, fail.ID, noop.ID)

		workers := map[int64]string{}
		ws, _ := f.st.Workers().List(ctx, store.Query{})
		for _, w := range ws {
			workers[w.ID] = w.Name
		}
		for _, c := range []struct {
			id     int64
			worker string
			result model.Result
		}{{first.ID, "x86", model.ResultSuccess}, {second.ID, "arm", model.ResultSuccess}, {fail.ID, "x86", model.ResultFailure}, {noop.ID, "arm", model.ResultSuccess}} {
			got := f.get(c.id)
			if got.Result != c.result || got.WorkerID == nil || workers[*got.WorkerID] != c.worker {
				t.Errorf("request %d: %s on %v, want %s on %s (output %s)", c.id, got.Result, got.WorkerID, c.result, c.worker, got.Output)
			}
			if got.Statistics == nil || got.Statistics.Duration <= 0 {
				t.Errorf("request %d has no statistics: %+v", c.id, got.Statistics)
			}
		}
		if s := f.get(first.ID).Statistics; s.CPUTime <= 0 || s.Memory <= 0 || s.DiskSpace < 7 {
			t.Errorf("command statistics: %+v", s)
		}
		if f.get(second.ID).StartedAt.Before(*f.get(first.ID).CompletedAt) {
			t.Error("the dependent started before its dependency completed")
		}

		// the output, downloaded with its sha256
		arts, _ := f.st.Artifacts().List(ctx, store.Query{Filter: map[string]string{"work_request": fmt.Sprint(first.ID), "category": "test:bin"}})
		if len(arts) != 1 {
			t.Fatalf("output artifacts: %+v", arts)
		}
		var body []byte
		f.call("GET", fmt.Sprintf("/api/1.0/artifacts/%d/files/out.bin", arts[0].ID), "", 200, &body)
		h := sha256.Sum256(body)
		if string(body) != "payload" || hex.EncodeToString(h[:]) != arts[0].Files[0].SHA256 {
			t.Fatalf("downloaded %q", body)
		}
		// logs of success and failure
		var log []byte
		f.call("GET", fmt.Sprintf("/api/1.0/work-requests/%d/logs/", first.ID), "", 200, &log)
		if !strings.Contains(string(log), "built on i386") {
			t.Fatalf("log: %s", log)
		}
		f.call("GET", fmt.Sprintf("/api/1.0/work-requests/%d/logs/", fail.ID), "", 200, &log)
		if !strings.Contains(string(log), "oops") {
			t.Fatalf("failure log: %s", log)
		}
	})
}

// TestAbortStopsTheRunningTask: an aborted request's processes die, and
// the runner is free again; the live log is readable while it runs.
func TestAbortStopsTheRunningTask(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn, 3*time.Second)
		f.startRunner("r", f.worker("r"), "amd64")
		marker := filepath.Join(t.TempDir(), "alive")
		wr := f.submit(model.TaskWorker, "command", map[string]any{"host_architecture": "amd64",
			"script": "echo started; while true; do touch " + marker + "; sleep 0.05; done"})
		deadline := time.Now().Add(15 * time.Second)
		for {
			var log []byte
			if f.get(wr.ID).Status == model.StatusRunning {
				req := fmt.Sprintf("/api/1.0/work-requests/%d/logs/", wr.ID)
				resp, err := httpGet(f.srv.URL+req, adminSecret)
				if err == nil && strings.Contains(resp, "started") {
					break
				}
			}
			_ = log
			if time.Now().After(deadline) {
				t.Fatalf("no live log: %+v", f.get(wr.ID))
			}
			time.Sleep(50 * time.Millisecond)
		}
		f.call("POST", fmt.Sprintf("/api/1.0/work-requests/%d/abort/", wr.ID), "{}", 200, nil)
		// the marker stops being touched once the task is dead (at once
		// with unshare, after the SIGTERM grace on the host backend)
		deadline = time.Now().Add(10 * time.Second)
		for {
			os.Remove(marker)
			time.Sleep(300 * time.Millisecond)
			if _, err := os.Stat(marker); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the aborted task still runs")
			}
		}
		// the runner takes new work
		next := f.submit(model.TaskWorker, "noop", map[string]any{"host_architecture": "amd64"})
		f.waitFinished(10*time.Second, next.ID)
	})
}

// TestRegisteredRunnerWaitsForEnable: a runner without a token registers,
// gets nothing while disabled, and works once an admin enables it.
func TestRegisteredRunnerWaitsForEnable(t *testing.T) {
	ctx := context.Background()
	f := newFarm(t, testdb.SQLite(t), 3*time.Second)
	dir := t.TempDir()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- runner.Run(rctx, runner.Config{Server: f.srv.URL, Name: "newcomer", WorkDir: dir, MaxBackoff: time.Second})
	}()
	defer func() { cancel(); <-done }()
	wr := f.submit(model.TaskWorker, "noop", map[string]any{"host_architecture": runner.Metadata(ctx, nil, "").HostArchitecture})
	var w *model.Worker
	deadline := time.Now().Add(10 * time.Second)
	for w == nil || w.ConnectedAt == nil {
		if time.Now().After(deadline) {
			t.Fatal("the runner did not register and connect")
		}
		time.Sleep(50 * time.Millisecond)
		list, _ := f.st.Workers().List(ctx, store.Query{Filter: map[string]string{"name": "newcomer"}})
		if len(list) == 1 {
			w = &list[0]
		}
	}
	if w.Enabled {
		t.Fatal("a registered worker starts enabled")
	}
	if _, err := os.Stat(filepath.Join(dir, runner.TokenFile)); err != nil {
		t.Fatalf("token not saved: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	if got := f.get(wr.ID); got.Status != model.StatusPending {
		t.Fatalf("a disabled worker got work: %+v", got)
	}
	f.call("PATCH", fmt.Sprintf("/api/1.0/workers/%d/", w.ID), `{"enabled": true}`, 200, nil)
	f.waitFinished(10*time.Second, wr.ID)
	if got := f.get(wr.ID); *got.WorkerID != w.ID {
		t.Fatalf("ran on %v", got.WorkerID)
	}
}

// TestRunnerOnceMetricsAndPush: --once runs one task and exits; the
// metrics listener serves the runner's metrics, and the Pushgateway gets
// them at exit.
func TestRunnerOnceMetricsAndPush(t *testing.T) {
	f := newFarm(t, testdb.SQLite(t), 3*time.Second)
	pushed := make(chan string, 4)
	pgw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		pushed <- r.Method + " " + r.URL.Path + " " + strconv.Itoa(len(b))
		w.WriteHeader(http.StatusOK)
	}))
	defer pgw.Close()
	metricsAddr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- runner.Run(context.Background(), runner.Config{Server: f.srv.URL, Token: f.worker("once"), Name: "once",
			WorkDir: t.TempDir(), Once: true, Pushgateway: pgw.URL, MetricsServer: "127.0.0.1:0", Logger: f.log,
			MetricsStarted: func(a string) { metricsAddr <- a }})
	}()
	addr := <-metricsAddr
	body, err := httpGet("http://"+addr+"/metrics", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kiln_build_info{", "go_goroutines", "process_cpu_seconds_total", "kiln_runner_connection_state{"} {
		if !strings.Contains(body, want) {
			t.Errorf("runner metrics lack %s", want)
		}
	}
	host := runner.Metadata(context.Background(), nil, "").HostArchitecture
	first := f.submit(model.TaskWorker, "noop", map[string]any{"host_architecture": host})
	second := f.submit(model.TaskWorker, "noop", map[string]any{"host_architecture": host})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a --once runner did not exit after its task")
	}
	ran := 0
	for _, id := range []int64{first.ID, second.ID} {
		if f.get(id).Status == model.StatusCompleted {
			ran++
		}
	}
	if ran != 1 {
		t.Fatalf("a --once runner ran %d tasks", ran)
	}
	select {
	case p := <-pushed:
		// POST (Add), so that a failed run keeps the last success's timestamp
		if !strings.HasPrefix(p, "POST /metrics/job/kiln_runner/instance/once ") {
			t.Fatalf("push: %s", p)
		}
	default:
		t.Fatal("nothing was pushed to the Pushgateway")
	}
}

// TestRunnerGracefulShutdown: on SIGTERM a runner lets its task finish
// within the grace period, or hands it back to the queue after it.
func TestRunnerGracefulShutdown(t *testing.T) {
	f := newFarm(t, testdb.SQLite(t), 3*time.Second)
	for _, c := range []struct {
		name     string
		sleep    string
		grace    time.Duration
		finished bool
	}{{"finishes", "0.5", 10 * time.Second, true}, {"handed back", "30", 300 * time.Millisecond, false}} {
		t.Run(c.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "started")
			wr := f.submit(model.TaskWorker, "command", map[string]any{"host_architecture": "amd64",
				"script": "touch " + marker + "; sleep " + c.sleep})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- runner.Run(ctx, runner.Config{Server: f.srv.URL, Token: f.worker("graceful-" + strings.ReplaceAll(c.name, " ", "-")),
					WorkDir: t.TempDir(), Architectures: []string{"amd64"}, ShutdownGrace: c.grace, Logger: f.log, Name: "g"})
			}()
			deadline := time.Now().Add(15 * time.Second)
			for {
				if _, err := os.Stat(marker); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the task did not start")
				}
				time.Sleep(20 * time.Millisecond)
			}
			cancel() // SIGTERM
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the runner did not stop")
			}
			got := f.get(wr.ID)
			if c.finished && (got.Status != model.StatusCompleted || got.Result != model.ResultSuccess) {
				t.Fatalf("the task did not finish within the grace period: %+v", got)
			}
			if !c.finished && (got.Status != model.StatusPending || got.Retries != 1) {
				t.Fatalf("the task was not handed back: %+v", got)
			}
			if !c.finished {
				f.call("POST", fmt.Sprintf("/api/1.0/work-requests/%d/abort/", wr.ID), "{}", 200, nil)
			}
		})
	}
}
