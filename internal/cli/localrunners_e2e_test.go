package cli_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/runner"
	"github.com/kiln-build/kiln/internal/testpeers"
)

// freeAddr reserves a loopback address for a listener a child will open.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// metricsText returns the text exposition at url, or "" while nothing
// answers there.
func metricsText(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}

// waitUntil polls cond until it holds, for up to 30 s.
func waitUntil(t *testing.T, what string, cond func() bool, explain func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\n%s", what, explain())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLocalRunnersInheritNothingAndRestart runs `kiln server
// --local-runners 1` configured the way that used to kill its runner
// silently — KILN_METRICS_SERVER (the child bound the server's port) and
// KILN_CONFIG with server-only keys (the child refused data_dir) — and
// checks that the runner, the one instance of the process pool "local",
// works, serves its own metrics listener, and that when it dies the
// server logs it and starts it again.
func TestLocalRunnersInheritNothingAndRestart(t *testing.T) {
	serverMetrics, runnerMetrics := freeAddr(t), freeAddr(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	configFile := filepath.Join(t.TempDir(), "kiln.toml")
	if err := os.WriteFile(configFile, []byte(fmt.Sprintf("data_dir = %q\nmetrics_cache_ttl = \"0s\"\n", dataDir)), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, cleanEnv(t, "KILN_METRICS_SERVER="+serverMetrics, "KILN_CONFIG="+configFile),
		"--data-dir", dataDir, "--local-runners", "1", "--local-runners-metrics-server", runnerMetrics, "--pool-interval", "100ms")
	explain := func() string {
		logs, _ := os.ReadFile(filepath.Join(dataDir, "runners", localRunnerName(t, srv)+".log"))
		return fmt.Sprintf("server log:\n%s\nrunner log:\n%s", srv.stderr, logs)
	}
	connected := func() bool {
		return strings.Contains(metricsText("http://"+runnerMetrics+"/metrics"), `kiln_runner_connection_state{state="connected"} 1`)
	}
	waitUntil(t, "the local runner's metrics listener to say it is connected", connected, explain)

	admin := readAdminToken(t, dataDir)
	apiJSON(t, srv.url, admin, "POST", "/api/1.0/scopes/", map[string]any{"name": "local"}, 201)
	apiJSON(t, srv.url, admin, "POST", "/api/1.0/workspaces/", map[string]any{"name": "main", "scope": "local", "public": true}, 201)
	arch := runner.Metadata(context.Background(), nil, "").HostArchitecture
	wr := apiJSON(t, srv.url, admin, "POST", "/api/1.0/work-requests/", map[string]any{"task_type": "Worker",
		"task_name": "noop", "workspace": "local/main", "task_data": map[string]any{"host_architecture": arch}}, 201)
	waitUntil(t, "the local runner to run the request", func() bool {
		got := apiJSON(t, srv.url, admin, "GET", fmt.Sprintf("/api/1.0/work-requests/%v/", wr["id"]), nil, 200)
		return got["status"] == "completed" && got["result"] == "success"
	}, explain)
	testpeers.CheckMetrics(t, testpeers.ScrapeText(t, "http://"+runnerMetrics+"/metrics"))
	if logs := explain(); strings.Contains(logs, "unknown key") || strings.Contains(logs, "address already in use") {
		t.Errorf("the local runner saw the server's settings:\n%s", logs)
	}

	// Killed, it is logged and started again after a pause.
	pid := localRunnerPID(t, srv, 1)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the server to log the exit and start the runner again", func() bool {
		s := srv.stderr.String()
		return strings.Contains(s, `msg="pool runner exited; starting it again after a pause"`) &&
			strings.Contains(s, `status="signal: killed"`) && strings.Count(s, `msg="pool runner started"`) == 2
	}, explain)
	if second := localRunnerPID(t, srv, 2); second == pid {
		t.Errorf("the runner was not restarted: pid %d", pid)
	}
	waitUntil(t, "the restarted runner to connect", connected, explain)
	// the autoscaler's next pass sees the same instance idle again
	wants := []string{`kiln_pool_process_exits_total{worker_pool="local"} 1`, `kiln_pool_processes{worker_pool="local"} 1`,
		`kiln_pool_max_instances{worker_pool="local"} 1`, `kiln_pool_instances{state="idle",worker_pool="local"} 1`,
		`kiln_pool_instance_creations_total{result="success",worker_pool="local"} 1`}
	waitUntil(t, "the server's internal /metrics to show the restarted runner", func() bool {
		internal := metricsText("http://" + serverMetrics + "/metrics")
		for _, want := range wants {
			if !strings.Contains(internal, want+"\n") {
				return false
			}
		}
		return true
	}, func() string { return metricsText("http://" + serverMetrics + "/metrics") })
	if err := srv.terminate(t); err != nil {
		t.Errorf("the server's shutdown: %v\n%s", err, srv.stderr)
	}
	if strings.Count(srv.stderr.String(), "pool runner exited") != 1 {
		t.Errorf("the runner's stop at shutdown was logged as a crash:\n%s", srv.stderr)
	}
}

var startedPID = regexp.MustCompile(`msg="pool runner started" component=pool worker_pool=local instance=\S+ worker=(\S+) pid=(\d+)`)

// localRunnerPID is the pid of the nth start of a local runner in the
// server's log.
func localRunnerPID(t *testing.T, srv *server, nth int) int {
	t.Helper()
	m := startedPID.FindAllStringSubmatch(srv.stderr.String(), -1)
	if len(m) < nth {
		t.Fatalf("the server logged %d local runner starts, want %d:\n%s", len(m), nth, srv.stderr)
	}
	pid, _ := strconv.Atoi(m[nth-1][2])
	return pid
}

// localRunnerName is the worker name of the first local runner.
func localRunnerName(t *testing.T, srv *server) string {
	m := startedPID.FindStringSubmatch(srv.stderr.String())
	if m == nil {
		return "none"
	}
	return m[1]
}
