package monitoring_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/runner"
	"github.com/kiln-build/kiln/internal/testkit"
	"github.com/kiln-build/kiln/internal/testpeers"
)

var kilnBin string

func TestMain(m *testing.M) { os.Exit(testkit.MainWithKiln(m, &kilnBin)) }

const adminToken = "kiln_monitoring_e2e_admin_token"

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

// kilnEnv is the environment of the kiln processes: the test's, without
// any KILN_ variable of the developer's, plus extra.
func kilnEnv(t *testing.T, extra ...string) []string {
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config")}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "KILN_") && k != "HOME" && k != "XDG_CONFIG_HOME" {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// farm is a running `kiln server` with a local runner.
type farm struct {
	t       *testing.T
	api     string
	dataDir string
	log     *testkit.Buffer
}

// startFarm starts the kiln binary as a server with its internal listener,
// one local runner with its listener, notifications to notify; it stops
// it (SIGTERM) when the test ends.
func startFarm(t *testing.T, api, internal, runnerMetrics, notify string) *farm {
	t.Helper()
	f := &farm{t: t, api: "http://" + api, dataDir: filepath.Join(t.TempDir(), "data"), log: &testkit.Buffer{}}
	cmd := exec.Command(kilnBin, "server", "--listen", api, "--data-dir", f.dataDir, "--metrics-server", internal,
		"--local-runners", "1", "--local-runners-metrics-server", runnerMetrics, "--metrics-cache-ttl", "0s",
		"--notify-url", notify)
	cmd.Env = kilnEnv(t, "KILN_BOOTSTRAP_TOKEN="+adminToken)
	cmd.Stdout, cmd.Stderr = f.log, f.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	f.until("the server to be ready", func() bool {
		resp, err := http.Get(f.api + "/-/ready")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return f
}

func (f *farm) until(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s\nkiln server:\n%s", what, f.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// call makes an API request as the admin, wants status want and decodes
// the answer into out.
func (f *farm) call(method, path string, body any, want int, out any) {
	f.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.api+path, r)
	req.Header.Set("Authorization", "Token "+adminToken)
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

// submit creates a Worker work request and returns its id.
func (f *farm) submit(task string, data map[string]any) int64 {
	f.t.Helper()
	var wr struct {
		ID int64 `json:"id"`
	}
	f.call("POST", "/api/1.0/work-requests/", map[string]any{"task_type": "Worker", "task_name": task,
		"workspace": "mon/main", "task_data": data}, 201, &wr)
	return wr.ID
}

// waitDone waits until every request is completed.
func (f *farm) waitDone(ids ...int64) {
	f.t.Helper()
	for _, id := range ids {
		f.until(fmt.Sprintf("work request %d to complete", id), func() bool {
			var wr struct {
				Status string `json:"status"`
			}
			f.call("GET", fmt.Sprintf("/api/1.0/work-requests/%d/", id), nil, 200, &wr)
			return wr.Status == "completed"
		})
	}
}

// workerToken creates an external worker and returns its token.
func (f *farm) workerToken(name string) string {
	var w struct {
		Token struct {
			Secret string `json:"secret"`
		} `json:"token"`
	}
	f.call("POST", "/api/1.0/workers/", map[string]any{"name": name}, 201, &w)
	return w.Token.Secret
}

// kiln runs the binary to its end and returns its exit code and output.
func kiln(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kilnBin, args...)
	cmd.Env = kilnEnv(t)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("kiln %s did not finish:\n%s", strings.Join(args, " "), out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

// TestMonitoringBundleOnARealFarm starts a farm (a server with its
// internal listener and a local runner with its listener), lets Debian's
// Prometheus scrape it (OpenMetrics negotiation on, as Prometheus does by
// default) together with a Pushgateway that one-shot runners and `kiln
// expire` push to, with every shipped rule file loaded; runs work of every
// kind; and then asks Prometheus every query of every shipped dashboard:
// each must return data (a number, not NaN), and every rule must have
// been evaluated without error. The four endpoints and the gateway pass
// `promtool check metrics`.
func TestMonitoringBundleOnARealFarm(t *testing.T) {
	began := time.Now()
	step := func(what string) { t.Logf("%5.1fs %s", time.Since(began).Seconds(), what) }
	gw := testpeers.StartPushgateway(t)
	notified := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	defer notified.Close()
	api, internal, runnerMetrics := freeAddr(t), freeAddr(t), freeAddr(t)

	// Prometheus first: what the farm does happens under its eyes, so
	// that rate() and the histograms' quantiles see it.
	var rules []string
	for _, f := range ruleFiles(t) {
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, abs)
	}
	prom := testpeers.StartPrometheusWithRules(t, rules,
		testpeers.ScrapeJob{Name: "kiln", Target: api, MetricsPath: "/api/1.0/open-metrics/"},
		testpeers.ScrapeJob{Name: "kiln-server", Target: internal, MetricsPath: "/metrics"},
		testpeers.ScrapeJob{Name: "kiln-runner", Target: runnerMetrics, MetricsPath: "/metrics"},
		testpeers.ScrapeJob{Name: "pushgateway", Target: strings.TrimPrefix(gw.URL, "http://"), MetricsPath: "/metrics", HonorLabels: true})

	step("Prometheus and the Pushgateway ready")
	f := startFarm(t, api, internal, runnerMetrics, notified.URL)
	step("farm ready")
	// Work done before the first scrapes would be in the histograms'
	// first samples, where rate() cannot see it.
	f.until("every target to be scraped", func() bool {
		return strings.Count(prom.Targets(t), `"health":"up"`) == 4 &&
			len(prom.Query(t, `kiln_runner_limit`)) == 1 && len(prom.Query(t, `kiln_scheduler_queue_wait_seconds_count`)) > 0
	})
	step("targets up")
	arch := runner.Metadata(context.Background(), nil, "").HostArchitecture

	// A farm with some history: a file store with a maximum, a second
	// worker pool (beside --local-runners' pool "local") with a budget and
	// an idle instance started now, under Prometheus' eyes, a template
	// declaring a metric, work that succeeds and fails, webhooks.
	var stores struct {
		Results []struct {
			ID int64 `json:"id"`
		} `json:"results"`
	}
	f.call("GET", "/api/1.0/file-stores/?name=default", nil, 200, &stores)
	f.call("PATCH", fmt.Sprintf("/api/1.0/file-stores/%d/", stores.Results[0].ID), map[string]any{"max_size": 10 << 30}, 200, nil)
	f.call("POST", "/api/1.0/worker-pools/", map[string]any{"name": "spare", "provider": "process", "architectures": []string{"spare"},
		"min_idle": 1, "max_instances": 1, "max_seconds_per_month": 1000000}, 201, nil)
	f.call("POST", "/api/1.0/scopes/", map[string]any{"name": "mon"}, 201, nil)
	f.call("POST", "/api/1.0/workspaces/", map[string]any{"name": "main", "scope": "mon", "public": true}, 201, nil)
	f.call("POST", "/api/1.0/workflow-templates/", map[string]any{"name": "check", "workspace": "mon/main", "kind": "sequence",
		"steps": []map[string]any{{"name": "check", "task_type": "Worker", "task_name": "noop",
			"task_data": map[string]any{"host_architecture": arch}}},
		"metrics": []map[string]any{{"name": "check_runs_total", "help": "Runs of the check workflow.", "counter": map[string]any{},
			"labels": []map[string]any{{"key": "status", "value": "{{workflow.status}}"}}}}}, 201, nil)
	var wf struct {
		ID int64 `json:"id"`
	}
	f.call("POST", "/api/1.0/workflows/", map[string]any{"template": "check", "workspace": "mon/main"}, 201, &wf)
	ids := []int64{
		wf.ID,
		f.submit("noop", map[string]any{"host_architecture": arch}),
		f.submit("command", map[string]any{"host_architecture": arch, "backend": "host", "script": "echo built > out.txt",
			"outputs": []map[string]any{{"path": "out.txt", "category": "test:output"}}}),
		f.submit("command", map[string]any{"host_architecture": arch, "backend": "host", "script": "exit 3"}),
		f.submit("command", map[string]any{"host_architecture": arch, "backend": "host", "script": "sleep 30", "timeout": 0.2}),
	}
	hook := func(header map[string]string) {
		req, _ := http.NewRequest("POST", f.api+"/api/1.0/hooks/kiln/", strings.NewReader(`{"work_request": {"task_type": "Worker",
			"task_name": "noop", "workspace": "mon/main", "task_data": {"host_architecture": "`+arch+`"}}}`))
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	hook(map[string]string{"Authorization": "Token " + adminToken, "X-Kiln-Event": "push"})
	hook(map[string]string{"X-Kiln-Event": "push"}) // unauthenticated: rejected
	f.waitDone(ids...)
	step("work done")

	// The local runner holds a task until the test ends, so that the
	// runners' gauges of jobs in hand have something to show.
	release := filepath.Join(t.TempDir(), "release")
	defer os.WriteFile(release, nil, 0o644)
	f.submit("command", map[string]any{"host_architecture": arch, "backend": "host",
		"script": fmt.Sprintf("while [ ! -e %q ]; do sleep 0.1; done", release)})
	f.until("the local runner to hold a task", func() bool {
		return strings.Contains(string(testpeers.ScrapeText(t, "http://"+runnerMetrics+"/metrics")),
			`kiln_runner_jobs{stage="running_script",state="running"} 1`)
	})

	// Short-lived jobs push: a one-shot runner that succeeds and one whose
	// task fails; kiln expire that succeeds and one that fails.
	once := func(name, task string, data map[string]any) (int, string) {
		token := f.workerToken(name)
		f.submit(task, data)
		return kiln(t, "runner", "--once", "--server", f.api, "--token", token, "--name", name, "--work-dir", t.TempDir(),
			"--pushgateway", gw.URL, "--architectures", arch, "--host-architecture", arch)
	}
	if code, out := once("once-ok", "noop", map[string]any{"host_architecture": arch}); code != 0 {
		t.Fatalf("kiln runner --once: exit %d\n%s", code, out)
	}
	if code, out := once("once-fails", "command", map[string]any{"host_architecture": arch, "backend": "host", "script": "exit 3"}); code != 1 {
		t.Fatalf("kiln runner --once with a failing task: exit %d\n%s", code, out)
	}
	if code, out := kiln(t, "expire", "--data-dir", f.dataDir, "--pushgateway", gw.URL); code != 0 {
		t.Fatalf("kiln expire: exit %d\n%s", code, out)
	}
	if code, out := kiln(t, "expire", "--data-dir", filepath.Join(t.TempDir(), "missing"), "--pushgateway", gw.URL); code != 1 {
		t.Fatalf("kiln expire on a missing database: exit %d\n%s", code, out)
	}

	step("pushed")
	// Every endpoint and the gateway pass promtool as Prometheus reads them.
	for _, u := range []string{f.api + "/api/1.0/open-metrics/", "http://" + internal + "/metrics",
		"http://" + runnerMetrics + "/metrics", gw.URL + "/metrics"} {
		testpeers.CheckMetrics(t, testpeers.ScrapeText(t, u))
	}

	// Every query of every dashboard returns data.
	type query struct{ where, expr string }
	var queries []query
	for _, d := range loadDashboards(t) {
		for _, v := range d.Templating.List {
			if m := labelValuesMetric.FindStringSubmatch(v.Query); m != nil {
				queries = append(queries, query{fmt.Sprintf("%s: variable $%s", d.file, v.Name), m[1]})
			}
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				queries = append(queries, query{fmt.Sprintf("%s: panel %q (%s)", d.file, p.Title, tg.RefID), tg.Expr})
			}
		}
	}
	pending := queries
	deadline := time.Now().Add(45 * time.Second)
	for len(pending) > 0 && time.Now().Before(deadline) {
		var still []query
		for _, q := range pending {
			if !hasNumber(prom.Query(t, expand(q.expr))) {
				still = append(still, q)
			}
		}
		pending = still
		step(fmt.Sprintf("%d of %d queries without data", len(pending), len(queries)))
		if len(pending) > 0 {
			time.Sleep(time.Second)
		}
	}
	for _, q := range pending {
		t.Errorf("%s returns no data: %s\n  → %v", q.where, expand(q.expr), prom.Query(t, expand(q.expr)))
	}
	t.Logf("%d dashboard queries return data", len(queries)-len(pending))

	// Every rule of every file is loaded and evaluates without error.
	want := 0
	for _, file := range rules {
		want += len(loadRules(t, file))
	}
	var states []testpeers.RuleState
	f.until("every rule to be evaluated", func() bool {
		states = prom.Rules(t)
		for _, r := range states {
			if !r.Evaluated || r.Health == "unknown" {
				return false
			}
		}
		return len(states) == want
	})
	for _, r := range states {
		if r.Health != "ok" || r.LastError != "" {
			t.Errorf("rule %s (%s, group %s): health %s %s", r.Name, r.Type, r.Group, r.Health, r.LastError)
		}
	}
	t.Logf("%d rules evaluated without error", len(states))
}

// hasNumber says whether an instant query returned a sample that is a
// number: Grafana draws nothing for NaN.
func hasNumber(samples []testpeers.Sample) bool {
	for _, s := range samples {
		if !math.IsNaN(s.Value) {
			return true
		}
	}
	return false
}
