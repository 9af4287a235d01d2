package cli_test

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// matrixTemplate builds on three architectures, failing the build whose
// architecture is the fail_on parameter, then runs a check on amd64.
const matrixTemplate = `name: build-all
workspace: debian/main
kind: matrix
matrix: {host_architecture: [amd64, i386, arm64]}
task:
  name: build
  task_type: Worker
  task_name: command
  task_data:
    backend: host
    script: 'echo building for {{matrix.host_architecture}}; test "{{matrix.host_architecture}}" != "{{params.fail_on}}"'
  metrics:
    - name: builds_total
      help: Builds by architecture and final status.
      labels:
        - {key: arch, value: "{{matrix.host_architecture}}"}
        - {key: status, value: "{{status}}"}
      counter: {}
then: {name: check, task_type: Worker, task_name: noop, task_data: {host_architecture: amd64}}
metrics:
  - name: runs_total
    help: Runs by status.
    labels: [{key: status, value: "{{workflow.status}}"}]
    counter: {}
  - name: run_duration_seconds
    help: Duration of successful runs.
    when: "{{workflow.status}} == Succeeded"
    histogram: {buckets: [1, 10, 60, 300], value: "{{workflow.duration}}"}
`

// startRunner starts `kiln runner` for one architecture with a worker of
// its own, stopped at the end of the test.
func startRunner(t *testing.T, as []string, serverURL, arch string) {
	t.Helper()
	token := strings.TrimSpace(ok(t, as, "worker", "create", "runner-"+arch).stdout)
	cmd := exec.Command(kilnBin, "runner", "--server", serverURL, "--name", "runner-"+arch,
		"--architectures", arch, "--host-architecture", arch, "--work-dir", t.TempDir())
	cmd.Env = append(cleanEnv(t), "KILN_TOKEN="+token)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "runner.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("runner-%s log:\n%s", arch, b)
		}
	})
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// waitForText polls url until its body holds every line of want.
func waitForText(t *testing.T, url string, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		body := fetch(t, url)
		missing := ""
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s lacks %s:\n%s", url, missing, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A matrix workflow over three architectures runs on three real runners,
// from a template made with `kiln template create`; a failing build fails
// the workflow; the template's metrics reach the internal /metrics, and the
// public endpoint counts the template, the workflows and the user's
// activity.
func TestWorkflowsEndToEnd(t *testing.T) {
	env := cleanEnv(t)
	srv := startServer(t, env, "--metrics-server", "127.0.0.1:0")
	var metricsURL string
	for _, line := range strings.Split(srv.stdout.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "Internal metrics on "); ok {
			metricsURL, _, _ = strings.Cut(rest, " ") // …/metrics
		}
	}
	if metricsURL == "" {
		t.Fatalf("no internal metrics address in:\n%s", srv.stdout)
	}
	as := append(cleanEnv(t), "KILN_SERVER="+srv.url, "KILN_TOKEN="+readAdminToken(t, srv.dataDir))
	ok(t, as, "scope", "create", "debian")
	ok(t, as, "workspace", "create", "main", "--scope", "debian", "--public")
	for _, arch := range []string{"amd64", "i386", "arm64"} {
		startRunner(t, as, srv.url, arch)
	}

	file := filepath.Join(t.TempDir(), "build-all.yaml")
	if err := os.WriteFile(file, []byte(matrixTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := ok(t, as, "template", "check", "-f", file); !strings.Contains(r.stdout, "--param fail_on=") {
		t.Errorf("template check: %s", r)
	}
	ok(t, as, "template", "create", "-f", file)
	// the schema editors use, from the binary and from the server
	published, err := os.ReadFile(filepath.Join("..", "..", "docs", "workflow-template.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r := ok(t, as, "template", "schema"); r.stdout != string(published) {
		t.Errorf("kiln template schema is not docs/workflow-template.schema.json:\n%s", r.stdout)
	}
	res, err := http.Get(srv.url + "/api/1.0/workflow-templates/schema/")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/schema+json" || string(served) != string(published) {
		t.Errorf("the server's schema: %d %s\n%s", res.StatusCode, res.Header.Get("Content-Type"), served)
	}
	tmpls := rows(t, ok(t, as, "template", "list").stdout)
	if len(tmpls) != 1 || tmpls[0]["KIND"] != "matrix" || tmpls[0]["PARAMETERS"] != "fail_on" {
		t.Fatalf("templates: %v", tmpls)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(matrixTemplate, "key: arch", "key: bad-key", 1)), 0o644)
	fails(t, as, 1, `task.metrics[0].labels[0].key: "bad-key" is not a valid label name`, "template", "create", "-f", bad)
	fails(t, as, 1, "parameters.fail_on: is required", "workflow", "start", "build-all")

	ok(t, as, "workflow", "start", "build-all", "--param", "fail_on=none", "--wait")
	r := fails(t, as, 1, "ended completed/failure", "workflow", "start", "build-all", "--param", "fail_on=i386", "--wait")
	if !strings.Contains(r.stdout, "build-i386") {
		t.Errorf("the failed workflow's steps are not shown: %s", r)
	}
	wfs := byColumn(rows(t, ok(t, as, "workflow", "list").stdout), "RESULT")
	if len(wfs) != 2 || wfs["success"]["STEPS"] != "4/4" || wfs["failure"]["STATUS"] != "completed" {
		t.Fatalf("workflows: %v", wfs)
	}
	steps := byColumn(rows(t, strings.SplitN(ok(t, as, "workflow", "show", wfs["failure"]["ID"]).stdout, "\n\n", 2)[1]), "STEP")
	if steps["build-i386"]["RESULT"] != "failure" || steps["build-amd64"]["RESULT"] != "success" || steps["check"]["STATUS"] != "aborted" {
		t.Fatalf("steps of the failed workflow: %v", steps)
	}

	waitForText(t, metricsURL,
		`kiln_workflow_runs_total{status="Succeeded",template="build-all",workspace="main"} 1`,
		`kiln_workflow_runs_total{status="Failed",template="build-all",workspace="main"} 1`,
		`kiln_workflow_builds_total{arch="i386",status="Failed",template="build-all",workspace="main"} 1`,
		`kiln_workflow_builds_total{arch="i386",status="Succeeded",template="build-all",workspace="main"} 1`,
		`kiln_workflow_builds_total{arch="arm64",status="Succeeded",template="build-all",workspace="main"} 2`,
		`kiln_workflow_run_duration_seconds_count{template="build-all",workspace="main"} 1`,
	)
	waitForText(t, srv.url+"/api/1.0/open-metrics/",
		`workflow_templates{scope="debian",task_name="matrix"} 1`,
		`user_activity_bucket{scope="debian",le="1"} 1`,
		`user_activity_count{scope="debian"} 1`,
		`work_requests{scope="debian",status="completed",task_name="matrix",task_type="Workflow"} 2`,
	)
}
