package server

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func send(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Token "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The metrics that templates declare reach the internal /metrics when a
// workflow finishes (here: aborted, which needs no runner), and only there.
func TestWorkflowMetricsOnInternalListener(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	r := start(t, Config{DataDir: dir, MetricsServer: "127.0.0.1:0", WorkflowMetricsMaxSeries: 10})
	tok := readToken(t, dir)
	for _, c := range []struct{ path, body string }{
		{"/api/1.0/scopes/", `{"name": "debian"}`},
		{"/api/1.0/workspaces/", `{"name": "main", "scope": "debian", "public": true}`},
		{"/api/1.0/workflow-templates/", `{"name": "nightly", "workspace": "debian/main", "kind": "sequence",
			"steps": [{"name": "wait", "task_type": "Wait", "task_name": "delay", "task_data": {"delay": 3600}}],
			"metrics": [{"name": "runs_total", "help": "Runs by status.", "counter": {},
				"labels": [{"key": "status", "value": "{{workflow.status}}"}]}]}`},
		{"/api/1.0/workflows/", `{"template": "nightly"}`},
	} {
		if code, body := send(t, http.MethodPost, r.API+c.path, tok, c.body); code != http.StatusCreated {
			t.Fatalf("POST %s: %d %s", c.path, code, body)
		}
	}
	if code, body := send(t, http.MethodPost, r.API+"/api/1.0/workflows/1/abort/", tok, `{}`); code != http.StatusOK {
		t.Fatalf("abort: %d %s", code, body)
	}
	want := `kiln_workflow_runs_total{status="Aborted",template="nightly",workspace="main"} 1`
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, r.Metrics+"/metrics", "")
		if strings.Contains(body, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("internal /metrics lacks %s:\n%s", want, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := get(t, r.API+"/metrics", ""); code == http.StatusOK && strings.Contains(body, "kiln_workflow_") {
		t.Fatal("template metrics are served on the public port")
	}
}
