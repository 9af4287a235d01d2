package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/server"
	"github.com/kiln-build/kiln/internal/telemetry"
	"github.com/kiln-build/kiln/internal/testpeers"
)

const metricsAdmin = "kiln_runner_metrics_test_admin"

// farm is an in-process kiln server for the runner's metrics tests.
type farm struct {
	t   *testing.T
	url string
}

func startFarm(t *testing.T) *farm {
	t.Helper()
	started := make(chan server.Addresses, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- server.Run(ctx, server.Config{
			Listen: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), "data"), BootstrapToken: metricsAdmin,
			ClaimInterval: 100 * time.Millisecond, Started: func(a server.Addresses) { started <- a },
		}, nil)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("the server did not stop")
		}
	})
	select {
	case a := <-started:
		f := &farm{t: t, url: a.API}
		f.call("POST", "/api/1.0/scopes/", map[string]any{"name": "m"}, 201, nil)
		f.call("POST", "/api/1.0/workspaces/", map[string]any{"name": "main", "scope": "m", "public": true}, 201, nil)
		return f
	case err := <-done:
		t.Fatalf("server: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not start")
	}
	return nil
}

func (f *farm) call(method, path string, body any, want int, out any) {
	f.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.url+path, r)
	req.Header.Set("Authorization", "Token "+metricsAdmin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		f.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *farm) workerToken(name string) string {
	var w struct {
		Token struct {
			Secret string `json:"secret"`
		} `json:"token"`
	}
	f.call("POST", "/api/1.0/workers/", map[string]any{"name": name}, 201, &w)
	return w.Token.Secret
}

func (f *farm) submit(data map[string]any) int64 {
	var wr struct {
		ID int64 `json:"id"`
	}
	f.call("POST", "/api/1.0/work-requests/", map[string]any{"task_type": "Worker", "task_name": "command",
		"workspace": "m/main", "task_data": data}, 201, &wr)
	return wr.ID
}

func (f *farm) status(id int64) (status, result string) {
	var wr struct {
		Status string `json:"status"`
		Result string `json:"result"`
	}
	f.call("GET", fmt.Sprintf("/api/1.0/work-requests/%d/", id), nil, 200, &wr)
	return wr.Status, wr.Result
}

func until(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sample returns the value of the series of family name whose labels
// include want (a gauge's or counter's value, a histogram's count).
func sample(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue next
				}
			}
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount()), true
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			default:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

// jobSeries lists the kiln_runner_jobs series as "stage/state=value".
func jobSeries(t *testing.T, g prometheus.Gatherer) []string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != "kiln_runner_jobs" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			out = append(out, fmt.Sprintf("%s/%s=%g", l["stage"], l["state"], m.GetGauge().GetValue()))
		}
	}
	return out
}

// gate holds the upload of one file until released, so that a test can
// look at the runner while it is in uploading_artifacts.
type gate struct {
	next    http.RoundTripper
	suffix  string
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut && strings.HasSuffix(req.URL.Path, g.suffix) {
		g.once.Do(func() { close(g.reached) })
		<-g.release
	}
	return g.next.RoundTrip(req)
}

func get(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRunnerMetricsThroughARealTask drives a runner through a real command
// task on a real (in-process) server and watches its metrics move: the
// stage and state gauges at each step, the counters and histograms after
// it, the connection and heartbeat gauges, the version info; then a task
// handed back at shutdown. Its /metrics passes promtool.
func TestRunnerMetricsThroughARealTask(t *testing.T) {
	f := startFarm(t)
	arch := Metadata(context.Background(), nil, "").HostArchitecture
	g := &gate{next: http.DefaultTransport, suffix: "/files/out.bin", reached: make(chan struct{}), release: make(chan struct{})}
	defer func() {
		select {
		case <-g.release:
		default:
			close(g.release)
		}
	}()
	metricsAddr := make(chan string, 1)
	workDir := t.TempDir()
	cfg := Config{
		Server: f.url, Token: f.workerToken("metrics"), Name: "metrics", WorkDir: workDir,
		Architectures: []string{arch}, HostArchitecture: arch, ShutdownGrace: 300 * time.Millisecond,
		MetricsServer: "127.0.0.1:0", MetricsStarted: func(a string) { metricsAddr <- a },
		HTTPClient: &http.Client{Transport: g}, Logger: slog.New(slog.DiscardHandler),
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m, err := newMetrics()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := newRunner(ctx, cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		stages []string
	)
	r.stageHook = func(stage, state string) {
		mu.Lock()
		defer mu.Unlock()
		if s := stage + "/" + state; len(stages) == 0 || stages[len(stages)-1] != s {
			stages = append(stages, s)
		}
	}
	var serveErr error
	stopped := make(chan struct{})
	go func() { defer close(stopped); serveErr = r.serve(ctx) }()
	t.Cleanup(func() { // also when the test fails half-way: no task outlives it
		cancel()
		select {
		case <-stopped:
		case <-time.After(30 * time.Second):
			t.Error("the runner did not stop")
		}
	})
	base := "http://" + <-metricsAddr
	reg := m.reg

	// Before any work: connected, idle, heartbeat age known.
	until(t, 10*time.Second, "the runner to connect", func() bool {
		v, _ := sample(t, reg, "kiln_runner_connection_state", map[string]string{"state": ConnConnected})
		return v == 1
	})
	for _, s := range []string{ConnConnecting, ConnDisconnected} {
		if v, ok := sample(t, reg, "kiln_runner_connection_state", map[string]string{"state": s}); !ok || v != 0 {
			t.Errorf("connection_state{state=%q} = %v (present %v), want 0", s, v, ok)
		}
	}
	if age, ok := sample(t, reg, "kiln_runner_heartbeat_age_seconds", nil); !ok || age < 0 || age > 30 {
		t.Errorf("heartbeat age %v (present %v)", age, ok)
	}
	if s := jobSeries(t, reg); len(s) != 0 {
		t.Errorf("an idle runner reports jobs: %v", s)
	}

	// A command task whose script waits for a file the test creates.
	id := f.submit(map[string]any{"host_architecture": arch, "backend": "host",
		"script":  "while [ ! -e go ]; do sleep 0.02; done; printf payload > out.bin",
		"outputs": []map[string]any{{"path": "out.bin", "category": "test:bin"}}})
	taskDir := filepath.Join(workDir, "tasks", fmt.Sprint(id))
	until(t, 20*time.Second, "the script to run", func() bool {
		return slices.Equal(jobSeries(t, reg), []string{"running_script/running=1"})
	})
	// The listener, while a job runs: promtool-clean, GET/HEAD only, pprof.
	testpeers.CheckMetrics(t, testpeers.ScrapeText(t, base+"/metrics"))
	if code, body := get(t, "GET", base+"/metrics"); code != 200 || !strings.Contains(body, `kiln_runner_jobs{stage="running_script",state="running"} 1`) {
		t.Errorf("GET /metrics: %d\n%s", code, body)
	}
	for _, method := range []string{"POST", "PUT", "DELETE"} {
		if code, _ := get(t, method, base+"/metrics"); code != http.StatusMethodNotAllowed {
			t.Errorf("%s /metrics = %d, want 405", method, code)
		}
	}
	if code, _ := get(t, "HEAD", base+"/metrics"); code != 200 {
		t.Errorf("HEAD /metrics = %d", code)
	}
	if code, body := get(t, "GET", base+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof on the runner's metrics listener: %d", code)
	}
	if code, _ := get(t, "GET", base+"/debug/pprof/cmdline"); code != 200 {
		t.Errorf("pprof cmdline: %d", code)
	}

	if err := os.WriteFile(filepath.Join(taskDir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.reached:
	case <-time.After(20 * time.Second):
		t.Fatal("the output was never uploaded")
	}
	if s := jobSeries(t, reg); !slices.Equal(s, []string{"uploading_artifacts/running=1"}) {
		t.Errorf("during the upload: jobs %v", s)
	}
	close(g.release)
	until(t, 20*time.Second, "the request to complete", func() bool {
		st, _ := f.status(id)
		return st == "completed"
	})
	if st, res := f.status(id); res != "success" {
		t.Fatalf("request %d: %s/%s", id, st, res)
	}
	until(t, 10*time.Second, "the job to be acknowledged and forgotten", func() bool { return len(jobSeries(t, reg)) == 0 })

	mu.Lock()
	got := slices.Clone(stages)
	mu.Unlock()
	want := []string{"preparing/running", "running_script/running", "uploading_artifacts/running", "finishing/running"}
	if !slices.Equal(got, want) {
		t.Errorf("stages %v, want %v", got, want)
	}
	if v := testutil.ToFloat64(m.finished.WithLabelValues("command", "success")); v != 1 {
		t.Errorf("jobs finished{command,success} = %v, want 1", v)
	}
	if v := testutil.ToFloat64(m.finished.WithLabelValues("command", "failure")); v != 0 {
		t.Errorf("jobs finished{command,failure} = %v, want 0", v)
	}
	for _, h := range []string{"kiln_runner_job_duration_seconds", "kiln_runner_job_queue_wait_seconds"} {
		if n, ok := sample(t, reg, h, map[string]string{"task": "command"}); !ok || n != 1 {
			t.Errorf("%s{task=command} count = %v, want 1", h, n)
		}
	}
	// every request to the server, by endpoint and status: the
	// connection, the output's and the log's declarations and contents
	for _, c := range []struct {
		endpoint, code string
		min            float64
	}{{"connect", "101", 1}, {"create_artifact", "201", 2}, {"upload_file", "201", 2}} {
		want := map[string]string{"endpoint": c.endpoint, "code": c.code}
		if n, _ := sample(t, reg, "kiln_runner_api_requests_total", want); n < c.min {
			t.Errorf("api_requests_total%v = %v, want at least %v", want, n, c.min)
		}
		if n, _ := sample(t, reg, "kiln_runner_api_request_duration_seconds", map[string]string{"endpoint": c.endpoint}); n < c.min {
			t.Errorf("api_request_duration_seconds{endpoint=%s} count = %v, want at least %v", c.endpoint, n, c.min)
		}
	}
	if v := testutil.ToFloat64(m.started.WithLabelValues("command")); v != 1 {
		t.Errorf("jobs_started_total{command} = %v, want 1", v)
	}
	for _, g := range []string{"kiln_runner_concurrent", "kiln_runner_limit"} {
		if v, ok := sample(t, reg, g, nil); !ok || v != 1 {
			t.Errorf("%s = %v (present %v), want 1", g, v, ok)
		}
	}
	// each stage was left once, the last one when the server acknowledged
	for _, st := range []string{StagePreparing, StageRunningScript, StageUploadingArtifacts, StageFinishing} {
		if n, _ := sample(t, reg, "kiln_runner_job_stage_duration_seconds", map[string]string{"stage": st}); n != 1 {
			t.Errorf("job_stage_duration_seconds{stage=%s} count = %v, want 1", st, n)
		}
	}
	if n, _ := sample(t, reg, "kiln_runner_failed_jobs_total", map[string]string{"task": "command", "failure_reason": "script_failure"}); n != 0 {
		t.Errorf("a successful job counted as failed: %v", n)
	}
	for _, kind := range []string{"connect", "heartbeat", "protocol", "upload", "result"} {
		if v := testutil.ToFloat64(m.errors.WithLabelValues(kind)); v != 0 {
			t.Errorf("errors{kind=%s} = %v on a healthy run", kind, v)
		}
	}
	checkVersionInfo(t, reg)

	// Shutdown in the middle of a task: it is handed back.
	mu.Lock()
	stages = nil
	mu.Unlock()
	second := f.submit(map[string]any{"host_architecture": arch, "backend": "host", "script": "sleep 60"})
	until(t, 20*time.Second, "the second script to run", func() bool {
		return slices.Equal(jobSeries(t, reg), []string{"running_script/running=1"})
	})
	cancel()
	select {
	case <-stopped:
		if serveErr != nil {
			t.Fatal(serveErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the runner did not stop")
	}
	mu.Lock()
	got = slices.Clone(stages)
	mu.Unlock()
	if !slices.Contains(got, "finishing/handing_back") {
		t.Errorf("stages at shutdown %v, want finishing/handing_back", got)
	}
	if v := testutil.ToFloat64(m.finished.WithLabelValues("command", "handed_back")); v != 1 {
		t.Errorf("jobs finished{command,handed_back} = %v, want 1", v)
	}
	for _, f := range []string{"script_failure", "job_execution_timeout", "job_canceled", "runner_system_failure", "upload_failure"} {
		if v := testutil.ToFloat64(m.failed.WithLabelValues("command", f)); v != 0 {
			t.Errorf("a handed-back job counted as failed_jobs_total{%s} = %v: it goes back to the queue, it did not fail", f, v)
		}
	}
	if st, _ := f.status(second); st != "pending" {
		t.Errorf("the handed-back request is %s, want pending", st)
	}
	if v, _ := sample(t, reg, "kiln_runner_connection_state", map[string]string{"state": ConnDisconnected}); v != 1 {
		t.Errorf("after shutdown the connection state is not disconnected")
	}
}

// checkVersionInfo: kiln_build_info carries the real build facts,
// every label set and none empty.
func checkVersionInfo(t *testing.T, g prometheus.Gatherer) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	bi := telemetry.ReadBuildInfo()
	want := map[string]string{"version": bi.Version, "revision": bi.Revision, "branch": bi.Branch, "built_at": bi.BuiltAt,
		"go_version": runtime.Version(), "os": runtime.GOOS, "architecture": runtime.GOARCH}
	for _, mf := range mfs {
		if mf.GetName() != "kiln_build_info" {
			continue
		}
		if len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetGauge().GetValue() != 1 {
			t.Fatalf("version info: %v", mf)
		}
		have := map[string]string{}
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] == "" || have[k] != v {
				t.Errorf("version info %s=%q, want %q", k, have[k], v)
			}
		}
		if len(have) != len(want) {
			t.Errorf("version info labels %v", have)
		}
		return
	}
	t.Error("no kiln_build_info")
}

// TestRunnerMetricsConnectErrors: a runner whose server is down counts
// the failed connections and says it is not connected.
func TestRunnerMetricsConnectErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there any more
	m, err := newMetrics()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := newRunner(ctx, Config{Server: url, Token: "kiln_not_checked_before_connecting", Name: "down",
		WorkDir: t.TempDir(), MaxBackoff: 100 * time.Millisecond, ShutdownGrace: time.Second}, m)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.serve(ctx) }()
	until(t, 10*time.Second, "failed connections to be counted", func() bool {
		return testutil.ToFloat64(m.errors.WithLabelValues("connect")) >= 2
	})
	if v, _ := sample(t, m.reg, "kiln_runner_connection_state", map[string]string{"state": ConnConnected}); v != 0 {
		t.Error("a runner that never connected says it is connected")
	}
	// each lost connection is logged as a warning, and counted so
	if v, _ := sample(t, m.reg, "kiln_runner_errors_total", map[string]string{"level": "warning"}); v < 2 {
		t.Errorf("errors_total{level=warning} = %v, want the failed connections' warnings", v)
	}
	if _, ok := sample(t, m.reg, "kiln_runner_heartbeat_age_seconds", nil); ok {
		t.Error("heartbeat age reported before the server was ever heard")
	}
	if n, _ := sample(t, m.reg, "kiln_runner_api_requests_total", map[string]string{"endpoint": "connect", "code": "error"}); n < 2 {
		t.Errorf("api_requests_total{endpoint=connect,code=error} = %v, want the failed connections", n)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the runner did not stop")
	}
}

// TestRunnerFailureReasons runs tasks that fail in each way a script can
// and one the server cancels, and reads kiln_runner_failed_jobs_total by
// failure_reason: each counted once, under its own reason.
func TestRunnerFailureReasons(t *testing.T) {
	f := startFarm(t)
	arch := Metadata(context.Background(), nil, "").HostArchitecture
	m, err := newMetrics()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := newRunner(ctx, Config{Server: f.url, Token: f.workerToken("reasons"), Name: "reasons", WorkDir: t.TempDir(),
		Architectures: []string{arch}, HostArchitecture: arch, ShutdownGrace: time.Second}, m)
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); r.serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-stopped
	})
	failed := func(reason string) float64 { return testutil.ToFloat64(m.failed.WithLabelValues("command", reason)) }
	run := func(data map[string]any, wantResult string) {
		t.Helper()
		data["host_architecture"], data["backend"] = arch, "host"
		id := f.submit(data)
		until(t, 30*time.Second, "the request to complete", func() bool { st, _ := f.status(id); return st == "completed" })
		if _, res := f.status(id); res != wantResult {
			t.Fatalf("request %d: result %s, want %s", id, res, wantResult)
		}
	}
	run(map[string]any{"script": "exit 3"}, "failure")
	run(map[string]any{"script": "sleep 30", "timeout": 0.2}, "failure")
	run(map[string]any{"script": "true", "outputs": []map[string]any{{"path": "never-made.txt", "category": "test:x"}}}, "failure")

	// the server cancels a running request: the runner stops it
	id := f.submit(map[string]any{"host_architecture": arch, "backend": "host", "script": "sleep 60"})
	until(t, 20*time.Second, "the script to run", func() bool { return slices.Equal(jobSeries(t, m.reg), []string{"running_script/running=1"}) })
	f.call("POST", fmt.Sprintf("/api/1.0/work-requests/%d/abort/", id), map[string]any{}, 200, nil)
	until(t, 20*time.Second, "the cancellation to be counted", func() bool { return failed("job_canceled") == 1 })

	for reason, want := range map[string]float64{"script_failure": 2, "job_execution_timeout": 1, "job_canceled": 1,
		"runner_system_failure": 0, "upload_failure": 0} {
		if v := failed(reason); v != want {
			t.Errorf("failed_jobs_total{command,%s} = %v, want %v", reason, v, want)
		}
	}
	if v := testutil.ToFloat64(m.started.WithLabelValues("command")); v != 4 {
		t.Errorf("jobs_started_total{command} = %v, want 4", v)
	}
	if v := testutil.ToFloat64(m.finished.WithLabelValues("command", "cancelled")); v != 1 {
		t.Errorf("jobs_finished_total{command,cancelled} = %v, want 1", v)
	}
}
