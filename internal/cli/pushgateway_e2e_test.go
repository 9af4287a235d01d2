package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testpeers"
)

// apiCall makes an authenticated API request and wants status want.
func apiCall(t *testing.T, base, token, method, path, contentType string, body []byte, want int) []byte {
	t.Helper()
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Token "+token)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, out)
	}
	return out
}

func apiJSON(t *testing.T, base, token, method, path string, body any, want int) map[string]any {
	t.Helper()
	b, _ := json.Marshal(body)
	out := apiCall(t, base, token, method, path, "application/json", b, want)
	var m map[string]any
	if len(out) > 0 {
		json.Unmarshal(out, &m)
	}
	return m
}

// kilnTimeout runs the kiln binary like kiln() but kills it after timeout,
// so a hanging command fails the test instead of stalling the suite.
func kilnTimeout(t *testing.T, timeout time.Duration, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kilnBin, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("kiln %s did not finish within %s:\n%s", strings.Join(args, " "), timeout, r)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("kiln %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// group returns the Pushgateway's group {job, instance}, failing the test
// when there is none.
func group(t *testing.T, gw *testpeers.Pushgateway, job, instance string) testpeers.Group {
	t.Helper()
	for _, g := range gw.Groups(t) {
		if g.Labels["job"] == job && g.Labels["instance"] == instance {
			return g
		}
	}
	t.Fatalf("the Pushgateway has no group job=%q instance=%q: %+v", job, instance, gw.Groups(t))
	return testpeers.Group{}
}

// value returns the single value of a metric of a group whose labels
// include want.
func value(t *testing.T, g testpeers.Group, name string, want map[string]string) (float64, bool) {
	t.Helper()
next:
	for _, s := range g.Metrics[name] {
		for k, v := range want {
			if s.Labels[k] != v {
				continue next
			}
		}
		return s.Value, true
	}
	return 0, false
}

// inRange checks a pushed timestamp against the wall clock around the run.
func inRange(t *testing.T, what string, v float64, from, to time.Time) {
	t.Helper()
	if v < float64(from.Unix())-1 || v > float64(to.Unix())+1 {
		t.Errorf("%s = %v, want between %d and %d", what, v, from.Unix(), to.Unix())
	}
}

// TestPushgatewayEndToEnd has a one-shot runner and `kiln expire` push to
// the real Pushgateway (Debian package prometheus-pushgateway) on loopback
// and reads the gateway's API: the groups {job, instance}, the values of
// the run, the success timestamp, and that a failed run keeps the previous
// success's timestamp while recording its own failure.
func TestPushgatewayEndToEnd(t *testing.T) {
	gw := testpeers.StartPushgateway(t)
	srv := startServer(t, cleanEnv(t))
	admin := readAdminToken(t, srv.dataDir)
	apiJSON(t, srv.url, admin, "POST", "/api/1.0/scopes/", map[string]any{"name": "e2e"}, 201)
	apiJSON(t, srv.url, admin, "POST", "/api/1.0/workspaces/", map[string]any{"name": "main", "scope": "e2e", "public": true}, 201)
	worker := apiJSON(t, srv.url, admin, "POST", "/api/1.0/workers/", map[string]any{"name": "once-1"}, 201)
	workerToken := worker["token"].(map[string]any)["secret"].(string)

	t.Run("runner --once", func(t *testing.T) {
		wr := apiJSON(t, srv.url, admin, "POST", "/api/1.0/work-requests/", map[string]any{"task_type": "Worker",
			"task_name": "noop", "workspace": "e2e/main", "task_data": map[string]any{"host_architecture": "amd64"}}, 201)
		runner := func(token string) result {
			return kilnTimeout(t, 60*time.Second, cleanEnv(t, "KILN_TOKEN="+token), "runner", "--once",
				"--server", srv.url, "--name", "once-1", "--work-dir", t.TempDir(), "--pushgateway", gw.URL,
				"--architectures", "amd64", "--host-architecture", "amd64")
		}
		before := time.Now()
		if r := runner(workerToken); r.code != 0 {
			t.Fatalf("kiln runner --once: %s", r)
		}
		after := time.Now()
		got := apiJSON(t, srv.url, admin, "GET", fmt.Sprintf("/api/1.0/work-requests/%v/", wr["id"]), nil, 200)
		if got["status"] != "completed" || got["result"] != "success" {
			t.Fatalf("the one-shot runner's request: %v", got)
		}

		g := group(t, gw, "kiln_runner", "once-1")
		if v, ok := value(t, g, "kiln_runner_jobs_finished_total", map[string]string{"task": "noop", "result": "success"}); !ok || v != 1 {
			t.Errorf("pushed jobs finished{noop,success} = %v (present %v), want 1", v, ok)
		}
		success, ok := value(t, g, "kiln_runner_last_success_timestamp_seconds", nil)
		if !ok {
			t.Fatalf("no kiln_runner_last_success_timestamp_seconds in %v", g.Metrics)
		}
		inRange(t, "last success", success, before, after)
		if _, ok := value(t, g, "kiln_runner_last_failure_timestamp_seconds", nil); ok {
			t.Error("a successful run pushed a failure timestamp")
		}
		onlyOutcomes(t, gw, "once-1")

		// A run that fails (its token is refused) pushes its failure and
		// leaves the last success alone.
		time.Sleep(1100 * time.Millisecond) // timestamps a second apart
		before = time.Now()
		r := runner("kiln_not_a_valid_token")
		after = time.Now()
		if r.code == 0 || !strings.Contains(r.stderr, "refused the runner's token") {
			t.Fatalf("a runner with a bad token: %s", r)
		}
		g = group(t, gw, "kiln_runner", "once-1")
		if v, _ := value(t, g, "kiln_runner_last_success_timestamp_seconds", nil); v != success {
			t.Errorf("after a failed run the last success is %v, want the previous %v", v, success)
		}
		failure, ok := value(t, g, "kiln_runner_last_failure_timestamp_seconds", nil)
		if !ok {
			t.Fatal("the failed run pushed no failure timestamp")
		}
		inRange(t, "last failure", failure, before, after)
	})

	// A one-shot runner that did not do its task pushes no last_success
	// and exits non-zero, whatever stopped it.
	t.Run("runner --once that never reached its server", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		unreachable := "http://" + ln.Addr().String()
		ln.Close()
		before := time.Now()
		p := startKiln(t, cleanEnv(t, "KILN_TOKEN="+workerToken), "runner", "--once", "--server", unreachable,
			"--name", "once-unreachable", "--work-dir", t.TempDir(), "--pushgateway", gw.URL, "--max-backoff", "200ms")
		p.waitStderr(t, "reconnecting")
		r := p.terminate(t)
		if r.code != 1 || !strings.Contains(r.stderr, "stopped before running a task") {
			t.Fatalf("want exit 1 and 'stopped before running a task': %s", r)
		}
		g := failedRun(t, gw, "once-unreachable", before)
		if v, ok := value(t, g, "kiln_runner_api_requests_total", map[string]string{"endpoint": "connect", "code": "error"}); !ok || v < 1 {
			t.Errorf("pushed api_requests_total{connect,error} = %v (present %v), want the failed connections", v, ok)
		}
	})

	t.Run("runner --once stopped by SIGTERM before any task", func(t *testing.T) {
		w := apiJSON(t, srv.url, admin, "POST", "/api/1.0/workers/", map[string]any{"name": "once-idle"}, 201)
		before := time.Now()
		p := startKiln(t, cleanEnv(t, "KILN_TOKEN="+w["token"].(map[string]any)["secret"].(string)), "runner", "--once",
			"--server", srv.url, "--name", "once-idle", "--work-dir", t.TempDir(), "--pushgateway", gw.URL,
			"--architectures", "amd64", "--host-architecture", "amd64")
		p.waitStderr(t, "msg=connected")
		r := p.terminate(t)
		if r.code != 1 || !strings.Contains(r.stderr, "stopped before running a task") {
			t.Fatalf("want exit 1 and 'stopped before running a task': %s", r)
		}
		g := failedRun(t, gw, "once-idle", before)
		if v, ok := value(t, g, "kiln_runner_api_requests_total", map[string]string{"endpoint": "connect", "code": "101"}); !ok || v != 1 {
			t.Errorf("pushed api_requests_total{connect,101} = %v (present %v), want 1", v, ok)
		}
	})

	t.Run("runner --once whose task fails", func(t *testing.T) {
		w := apiJSON(t, srv.url, admin, "POST", "/api/1.0/workers/", map[string]any{"name": "once-fails"}, 201)
		apiJSON(t, srv.url, admin, "POST", "/api/1.0/work-requests/", map[string]any{"task_type": "Worker",
			"task_name": "command", "workspace": "e2e/main",
			"task_data": map[string]any{"host_architecture": "amd64", "backend": "host", "script": "exit 3"}}, 201)
		before := time.Now()
		r := kilnTimeout(t, 60*time.Second, cleanEnv(t, "KILN_TOKEN="+w["token"].(map[string]any)["secret"].(string)),
			"runner", "--once", "--server", srv.url, "--name", "once-fails", "--work-dir", t.TempDir(), "--pushgateway", gw.URL,
			"--architectures", "amd64", "--host-architecture", "amd64")
		if r.code != 1 || !strings.Contains(r.stderr, "the task finished with result failure") {
			t.Fatalf("want exit 1 and 'the task finished with result failure': %s", r)
		}
		g := failedRun(t, gw, "once-fails", before)
		if v, ok := value(t, g, "kiln_runner_failed_jobs_total", map[string]string{"task": "command", "failure_reason": "script_failure"}); !ok || v != 1 {
			t.Errorf("pushed failed_jobs_total{command,script_failure} = %v (present %v), want 1", v, ok)
		}
		if v, ok := value(t, g, "kiln_runner_jobs_finished_total", map[string]string{"task": "command", "result": "failure"}); !ok || v != 1 {
			t.Errorf("pushed jobs_finished_total{command,failure} = %v (present %v), want 1", v, ok)
		}
		// what the gateway holds passes promtool, as Prometheus scrapes it
		testpeers.CheckMetrics(t, testpeers.ScrapeText(t, gw.URL+"/metrics"))
	})

	t.Run("expire", func(t *testing.T) {
		host, err := os.Hostname()
		if err != nil {
			t.Fatal(err)
		}
		upload := func(expireAt any, content string) (int64, string) {
			sum := sha256.Sum256([]byte(content))
			sha := hex.EncodeToString(sum[:])
			art := apiJSON(t, srv.url, admin, "POST", "/api/1.0/artifacts/", map[string]any{"category": "test:file",
				"workspace": "e2e/main", "expire_at": expireAt,
				"files": []map[string]any{{"path": "f.txt", "sha256": sha, "size": len(content)}}}, 201)
			id := int64(art["id"].(float64))
			apiCall(t, srv.url, admin, "PUT", fmt.Sprintf("/api/1.0/artifacts/%d/files/f.txt", id), "application/octet-stream", []byte(content), 201)
			return id, sha
		}
		blob := func(sha string) string {
			return filepath.Join(srv.dataDir, "files", sha[0:2], sha[2:4], sha)
		}
		expired, expiredSHA := upload("2001-01-01T00:00:00Z", "old build output")
		kept, keptSHA := upload(nil, "current build output")
		if _, err := os.Stat(blob(expiredSHA)); err != nil {
			t.Fatalf("the file store layout changed; this test looks for content at %s: %v", blob(expiredSHA), err)
		}

		env := cleanEnv(t)
		if r := kilnTimeout(t, 60*time.Second, env, "expire", "--data-dir", srv.dataDir, "--dry-run", "--pushgateway", gw.URL); r.code != 0 || !strings.Contains(r.stdout, "dry run: 1 artifacts") {
			t.Fatalf("kiln expire --dry-run: %s", r)
		}
		apiCall(t, srv.url, admin, "GET", fmt.Sprintf("/api/1.0/artifacts/%d/", expired), "", nil, 200)

		before := time.Now()
		r := kilnTimeout(t, 60*time.Second, env, "expire", "--data-dir", srv.dataDir, "--pushgateway", gw.URL)
		after := time.Now()
		if r.code != 0 || !strings.Contains(r.stdout, "expired 1 artifacts") || !strings.Contains(r.stdout, "deleted 1 unused files") {
			t.Fatalf("kiln expire: %s", r)
		}
		apiCall(t, srv.url, admin, "GET", fmt.Sprintf("/api/1.0/artifacts/%d/", expired), "", nil, 404)
		apiCall(t, srv.url, admin, "GET", fmt.Sprintf("/api/1.0/artifacts/%d/", kept), "", nil, 200)
		if _, err := os.Stat(blob(expiredSHA)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the expired artifact's content is still in the file store: %v", err)
		}
		if _, err := os.Stat(blob(keptSHA)); err != nil {
			t.Errorf("the kept artifact's content is gone: %v", err)
		}

		g := group(t, gw, "kiln_expire", host)
		for name, want := range map[string]float64{
			"kiln_expire_artifacts_deleted": 1, "kiln_expire_artifacts_kept": 0,
			"kiln_expire_files_deleted": 1, "kiln_expire_file_errors": 0,
		} {
			if v, ok := value(t, g, name, nil); !ok || v != want {
				t.Errorf("pushed %s = %v (present %v), want %v", name, v, ok, want)
			}
		}
		if _, ok := value(t, g, "kiln_expire_duration_seconds", nil); !ok {
			t.Error("no duration pushed")
		}
		success, ok := value(t, g, "kiln_expire_last_success_timestamp_seconds", nil)
		if !ok {
			t.Fatalf("no kiln_expire_last_success_timestamp_seconds in %v", g.Metrics)
		}
		inRange(t, "last success", success, before, after)

		// A failed run: the database is not there.
		time.Sleep(1100 * time.Millisecond)
		before = time.Now()
		r = kilnTimeout(t, 60*time.Second, env, "expire", "--data-dir", filepath.Join(t.TempDir(), "missing"), "--pushgateway", gw.URL)
		after = time.Now()
		if r.code != 1 || !strings.Contains(r.stderr, "no database at") {
			t.Fatalf("kiln expire on a missing database: %s", r)
		}
		g = group(t, gw, "kiln_expire", host)
		if v, _ := value(t, g, "kiln_expire_last_success_timestamp_seconds", nil); v != success {
			t.Errorf("after a failed run the last success is %v, want the previous %v", v, success)
		}
		failure, ok := value(t, g, "kiln_expire_last_failure_timestamp_seconds", nil)
		if !ok {
			t.Fatal("the failed run pushed no failure timestamp")
		}
		inRange(t, "last failure", failure, before, after)
		if v, _ := value(t, g, "kiln_expire_artifacts_deleted", nil); v != 0 {
			t.Errorf("the failed run's artifacts_deleted = %v, want 0", v)
		}
	})
}

// pushedByRunner are the families a one-shot runner may push: what its
// run did (runner.outcomeFamilies), the run's timestamps, and what the
// Pushgateway adds to every group itself.
var pushedByRunner = map[string]bool{
	"kiln_runner_jobs_started_total": true, "kiln_runner_jobs_finished_total": true, "kiln_runner_failed_jobs_total": true,
	"kiln_runner_job_duration_seconds": true, "kiln_runner_job_stage_duration_seconds": true,
	"kiln_runner_job_queue_wait_seconds": true, "kiln_runner_server_errors_total": true,
	"kiln_runner_api_requests_total": true, "kiln_runner_api_request_duration_seconds": true,
	"kiln_runner_errors_total":                   true,
	"kiln_runner_last_success_timestamp_seconds": true, "kiln_runner_last_failure_timestamp_seconds": true,
	"push_time_seconds": true, "push_failure_time_seconds": true,
}

// onlyOutcomes checks that the group of the runner instance holds only
// outcome families: no live-state gauge (jobs, connection_state,
// heartbeat_age_seconds) that would stay frozen in the gateway, no
// configuration, no Go or process figures of a process that is gone.
func onlyOutcomes(t *testing.T, gw *testpeers.Pushgateway, instance string) {
	t.Helper()
	fams := gw.Families(t, "kiln_runner", instance)
	if len(fams) == 0 {
		t.Fatalf("nothing pushed for instance %s", instance)
	}
	for name := range fams {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if !pushedByRunner[name] && !pushedByRunner[base] {
			t.Errorf("the runner %s pushed %s, which is not an outcome of its run", instance, name)
		}
	}
}

// failedRun checks the group of a runner whose run failed after from:
// a fresh last_failure, no last_success, only outcome families.
func failedRun(t *testing.T, gw *testpeers.Pushgateway, instance string, from time.Time) testpeers.Group {
	t.Helper()
	g := group(t, gw, "kiln_runner", instance)
	if v, ok := value(t, g, "kiln_runner_last_success_timestamp_seconds", nil); ok {
		t.Errorf("the failed run of %s pushed last_success = %v", instance, v)
	}
	failure, ok := value(t, g, "kiln_runner_last_failure_timestamp_seconds", nil)
	if !ok {
		t.Fatalf("the failed run of %s pushed no last_failure: %v", instance, g.Metrics)
	}
	inRange(t, "last failure", failure, from, time.Now())
	onlyOutcomes(t, gw, instance)
	return g
}

// bgKiln is a kiln process running in the background.
type bgKiln struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr *lockedBuffer
	done   chan struct{}
	code   int
}

// startKiln starts the kiln binary; the test's end kills it if it still
// runs.
func startKiln(t *testing.T, env []string, args ...string) *bgKiln {
	t.Helper()
	p := &bgKiln{stderr: newLockedBuffer(), done: make(chan struct{})}
	p.cmd = exec.Command(kilnBin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitStderr waits until the process has written want on stderr.
func (p *bgKiln) waitStderr(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.stderr.String(), want) {
		select {
		case <-p.done:
			t.Fatalf("kiln exited before saying %q:\n%s", want, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kiln did not say %q within 30s:\n%s", want, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// terminate sends SIGTERM and waits for the process to exit.
func (p *bgKiln) terminate(t *testing.T) result {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("kiln did not exit within 30s of SIGTERM:\n%s", p.stderr)
	}
	return result{stdout: p.stdout.String(), stderr: p.stderr.String(), code: p.code}
}
