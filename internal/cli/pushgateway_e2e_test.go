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
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
		for name := range g.Metrics {
			if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
				t.Errorf("the runner pushed %s, a figure of a process that is gone", name)
			}
		}

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
