package workflow

import (
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kiln-build/kiln/internal/model"
)

// fakeClock is a settable clock for TTL tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func loadFixture(t *testing.T, name string) *Template {
	t.Helper()
	data, err := os.ReadFile("testdata/good/" + name)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := Parse(name, data)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.ID, tmpl.WorkspaceID = 1, 1
	return tmpl
}

// finished builds a finished work request that ran for d.
func finished(step string, status model.Status, result model.Result, d time.Duration, data string) model.WorkRequest {
	start := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	end := start.Add(d)
	us := d.Microseconds()
	wr := model.WorkRequest{StepName: step, Status: status, Result: result, StartedAt: &start, CompletedAt: &end, Data: json.RawMessage(data)}
	if status == model.StatusCompleted {
		wr.ExecutionTime = &us
	}
	return wr
}

func ok(step string, d time.Duration, data string) model.WorkRequest {
	return finished(step, model.StatusCompleted, model.ResultSuccess, d, data)
}

// matrixRun is a finished run of testdata/good/matrix-build.yaml: the
// builds take amd64, i386, arm64 seconds; a zero duration fails that
// build, which aborts publish and fails the root.
func matrixRun(tmpl *Template, root time.Duration, amd64, i386, arm64 time.Duration) Run {
	failed := false
	var children []model.WorkRequest
	for _, b := range []struct {
		arch string
		d    time.Duration
	}{{"amd64", amd64}, {"i386", i386}, {"arm64", arm64}} {
		data := `{"host_architecture": "` + b.arch + `"}`
		if b.d == 0 {
			failed = true
			children = append(children, finished("build-"+b.arch, model.StatusCompleted, model.ResultFailure, 2*time.Second, data))
			continue
		}
		children = append(children, ok("build-"+b.arch, b.d, data))
	}
	r := ok("", root, "{}")
	if failed {
		children = append(children, finished("publish", model.StatusAborted, "", 0, "{}"))
		r = finished("", model.StatusCompleted, model.ResultFailure, root, "{}")
	} else {
		children = append(children, ok("publish", time.Second, "{}"))
	}
	r.TaskType = model.TaskWorkflow
	return Run{Template: tmpl, Workspace: "main", Root: &r, Children: children}
}

// A counter by status, a histogram of the duration of successful runs and
// a step-level gauge, after three workflows of which one failed.
func TestTemplateMetricsAfterWorkflows(t *testing.T) {
	tmpl := loadFixture(t, "matrix-build.yaml")
	m := NewMetrics(MetricsOptions{})
	for _, run := range []Run{
		matrixRun(tmpl, 5*time.Second, 3*time.Second, 4*time.Second, 2*time.Second),
		matrixRun(tmpl, 30*time.Second, 20*time.Second, 25*time.Second, 28*time.Second),
		matrixRun(tmpl, 400*time.Second, 100*time.Second, 0, 300*time.Second), // i386 fails
	} {
		if err := m.Record(run); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP kiln_workflow_build_duration_seconds Duration of the last build of each architecture.
# TYPE kiln_workflow_build_duration_seconds gauge
kiln_workflow_build_duration_seconds{arch="amd64",status="Succeeded",step="build-amd64",template="build-all",workspace="main"} 100
kiln_workflow_build_duration_seconds{arch="arm64",status="Succeeded",step="build-arm64",template="build-all",workspace="main"} 300
kiln_workflow_build_duration_seconds{arch="i386",status="Failed",step="build-i386",template="build-all",workspace="main"} 2
kiln_workflow_build_duration_seconds{arch="i386",status="Succeeded",step="build-i386",template="build-all",workspace="main"} 25
# HELP kiln_workflow_builds_total Builds by architecture and final status; a retried build counts once.
# TYPE kiln_workflow_builds_total counter
kiln_workflow_builds_total{arch="amd64",status="Succeeded",template="build-all",workspace="main"} 3
kiln_workflow_builds_total{arch="arm64",status="Succeeded",template="build-all",workspace="main"} 3
kiln_workflow_builds_total{arch="i386",status="Failed",template="build-all",workspace="main"} 1
kiln_workflow_builds_total{arch="i386",status="Succeeded",template="build-all",workspace="main"} 2
# HELP kiln_workflow_run_duration_seconds Duration of successful workflow runs.
# TYPE kiln_workflow_run_duration_seconds histogram
kiln_workflow_run_duration_seconds_bucket{template="build-all",workspace="main",le="1"} 0
kiln_workflow_run_duration_seconds_bucket{template="build-all",workspace="main",le="10"} 1
kiln_workflow_run_duration_seconds_bucket{template="build-all",workspace="main",le="60"} 2
kiln_workflow_run_duration_seconds_bucket{template="build-all",workspace="main",le="300"} 2
kiln_workflow_run_duration_seconds_bucket{template="build-all",workspace="main",le="+Inf"} 2
kiln_workflow_run_duration_seconds_sum{template="build-all",workspace="main"} 35
kiln_workflow_run_duration_seconds_count{template="build-all",workspace="main"} 2
# HELP kiln_workflow_runs_total Workflow runs by status.
# TYPE kiln_workflow_runs_total counter
kiln_workflow_runs_total{status="Failed",template="build-all",workspace="main"} 1
kiln_workflow_runs_total{status="Succeeded",template="build-all",workspace="main"} 2
# HELP kiln_workflow_metrics_series Series currently held for each template-declared metric; compare with the per-metric cap.
# TYPE kiln_workflow_metrics_series gauge
kiln_workflow_metrics_series{metric="kiln_workflow_build_duration_seconds"} 4
kiln_workflow_metrics_series{metric="kiln_workflow_builds_total"} 4
kiln_workflow_metrics_series{metric="kiln_workflow_run_duration_seconds"} 1
kiln_workflow_metrics_series{metric="kiln_workflow_runs_total"} 2
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.CollectAndLint(m); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
}

// A step that failed and was retried until it succeeded counts once, in
// its final state: Record sees only the children as they are when the
// root finishes.
func TestStepMetricsUseFinalState(t *testing.T) {
	tmpl := loadFixture(t, "sequence.yaml")
	m := NewMetrics(MetricsOptions{})
	test := ok("test", time.Second, "{}")
	test.Retries = 2 // failed twice before
	root := ok("", 10*time.Second, "{}")
	root.TaskType = model.TaskWorkflow
	run := Run{Template: tmpl, Workspace: "main", Root: &root, Children: []model.WorkRequest{
		test, ok("wait", time.Second, "{}"), ok("deploy", 61*time.Second, "{}"),
	}}
	if err := m.Record(run); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP kiln_workflow_slow_deploys_total Deploys that took longer than a minute and succeeded.
# TYPE kiln_workflow_slow_deploys_total counter
kiln_workflow_slow_deploys_total{template="test-and-deploy",workspace="main"} 1
# HELP kiln_workflow_last_run_duration_seconds Duration of the last run of the template.
# TYPE kiln_workflow_last_run_duration_seconds gauge
kiln_workflow_last_run_duration_seconds{name="workflow test-and-deploy",result="Succeeded",template="test-and-deploy",workspace="main"} 10
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want),
		"kiln_workflow_step_failures_total", "kiln_workflow_slow_deploys_total", "kiln_workflow_last_run_duration_seconds"); err != nil {
		t.Fatal(err)
	}
}

func TestSeriesExpireAfterTTL(t *testing.T) {
	clock := newFakeClock()
	tmpl := loadFixture(t, "matrix-build.yaml")
	m := NewMetrics(MetricsOptions{TTL: time.Hour, Now: clock.Now})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	count := func(name string) int { return testutil.CollectAndCount(m, name) }

	must(m.Record(matrixRun(tmpl, 5*time.Second, time.Second, time.Second, time.Second))) // Succeeded series at 0
	clock.Advance(40 * time.Minute)
	must(m.Record(matrixRun(tmpl, 5*time.Second, time.Second, 0, time.Second))) // Failed series at 40m
	if n := count("kiln_workflow_runs_total"); n != 2 {
		t.Fatalf("%d runs_total series, want 2", n)
	}
	clock.Advance(20 * time.Minute) // 60m: the Succeeded series is an hour old
	if n := count("kiln_workflow_runs_total"); n != 1 {
		t.Fatalf("after the TTL, %d runs_total series, want only the Failed one", n)
	}
	// the histogram (only observed by the first, successful run) is gone too,
	// and so is its family
	if n := count("kiln_workflow_run_duration_seconds"); n != 0 {
		t.Fatalf("histogram not expired: %d series", n)
	}
	// an update keeps a series alive: Failed again at 90m, then check at 130m
	clock.Advance(30 * time.Minute)
	must(m.Record(matrixRun(tmpl, 5*time.Second, time.Second, 0, time.Second)))
	clock.Advance(40 * time.Minute)
	if n := count("kiln_workflow_runs_total"); n != 1 {
		t.Fatalf("an updated series expired: %d series", n)
	}
	// a counter that comes back after expiring starts again from its new
	// observations
	must(m.Record(matrixRun(tmpl, 5*time.Second, time.Second, time.Second, time.Second)))
	want := `
# HELP kiln_workflow_runs_total Workflow runs by status.
# TYPE kiln_workflow_runs_total counter
kiln_workflow_runs_total{status="Failed",template="build-all",workspace="main"} 2
kiln_workflow_runs_total{status="Succeeded",template="build-all",workspace="main"} 1
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), "kiln_workflow_runs_total"); err != nil {
		t.Fatal(err)
	}
}

func TestSeriesCap(t *testing.T) {
	clock := newFakeClock()
	tmpl := loadFixture(t, "matrix-build.yaml")
	m := NewMetrics(MetricsOptions{TTL: time.Hour, MaxSeries: 2, Now: clock.Now})
	record := func(r Run) {
		t.Helper()
		if err := m.Record(r); err != nil {
			t.Fatal(err)
		}
	}
	record(matrixRun(tmpl, time.Second, time.Second, time.Second, time.Second)) // 3 gauge series wanted, cap 2: arm64 dropped
	clock.Advance(30 * time.Minute)
	record(matrixRun(tmpl, time.Second, time.Second, 0, time.Second)) // i386 Failed and arm64 dropped
	want := `
# HELP kiln_workflow_metrics_dropped_observations_total Observations of template-declared metrics that were not recorded, by metric and reason (series_limit, conflict, invalid_value).
# TYPE kiln_workflow_metrics_dropped_observations_total counter
kiln_workflow_metrics_dropped_observations_total{metric="kiln_workflow_build_duration_seconds",reason="series_limit"} 3
kiln_workflow_metrics_dropped_observations_total{metric="kiln_workflow_builds_total",reason="series_limit"} 3
# HELP kiln_workflow_metrics_series Series currently held for each template-declared metric; compare with the per-metric cap.
# TYPE kiln_workflow_metrics_series gauge
kiln_workflow_metrics_series{metric="kiln_workflow_build_duration_seconds"} 2
kiln_workflow_metrics_series{metric="kiln_workflow_builds_total"} 2
kiln_workflow_metrics_series{metric="kiln_workflow_run_duration_seconds"} 1
kiln_workflow_metrics_series{metric="kiln_workflow_runs_total"} 2
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want),
		"kiln_workflow_metrics_dropped_observations_total", "kiln_workflow_metrics_series"); err != nil {
		t.Fatal(err)
	}
	// existing series keep being updated at the cap
	wantGauge := `
# HELP kiln_workflow_build_duration_seconds Duration of the last build of each architecture.
# TYPE kiln_workflow_build_duration_seconds gauge
kiln_workflow_build_duration_seconds{arch="amd64",status="Succeeded",step="build-amd64",template="build-all",workspace="main"} 1
kiln_workflow_build_duration_seconds{arch="i386",status="Succeeded",step="build-i386",template="build-all",workspace="main"} 1
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(wantGauge), "kiln_workflow_build_duration_seconds"); err != nil {
		t.Fatal(err)
	}
	// once the old series expire, room is made for new ones
	// at 75m, i386/Succeeded (last updated at 0) has expired; amd64 (30m) has not
	clock.Advance(45 * time.Minute)
	record(matrixRun(tmpl, time.Second, 7*time.Second, 0, 7*time.Second))
	wantGauge = `
# HELP kiln_workflow_build_duration_seconds Duration of the last build of each architecture.
# TYPE kiln_workflow_build_duration_seconds gauge
kiln_workflow_build_duration_seconds{arch="amd64",status="Succeeded",step="build-amd64",template="build-all",workspace="main"} 7
kiln_workflow_build_duration_seconds{arch="i386",status="Failed",step="build-i386",template="build-all",workspace="main"} 2
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(wantGauge), "kiln_workflow_build_duration_seconds"); err != nil {
		t.Fatal(err)
	}
}

// Two templates that declare one name with different shapes: the first
// series wins, the other's observations are dropped and counted.
func TestConflictingDeclarations(t *testing.T) {
	a, err := ParseYAML([]byte(`
name: a
kind: sequence
steps: [{name: s, task_type: Wait, task_name: delay}]
metrics: [{name: runs_total, help: Runs., counter: {}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseYAML([]byte(`
name: b
kind: sequence
steps: [{name: s, task_type: Wait, task_name: delay}]
metrics: [{name: runs_total, help: Runs., counter: {}, labels: [{key: status, value: "{{workflow.status}}"}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(MetricsOptions{})
	root := ok("", time.Second, "{}")
	for _, tmpl := range []*Template{a, b, a} {
		if err := m.Record(Run{Template: tmpl, Workspace: "w", Root: &root, Children: []model.WorkRequest{ok("s", time.Second, "{}")}}); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP kiln_workflow_metrics_dropped_observations_total Observations of template-declared metrics that were not recorded, by metric and reason (series_limit, conflict, invalid_value).
# TYPE kiln_workflow_metrics_dropped_observations_total counter
kiln_workflow_metrics_dropped_observations_total{metric="kiln_workflow_runs_total",reason="conflict"} 1
# HELP kiln_workflow_runs_total Runs.
# TYPE kiln_workflow_runs_total counter
kiln_workflow_runs_total{template="a",workspace="w"} 2
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want),
		"kiln_workflow_metrics_dropped_observations_total", "kiln_workflow_runs_total"); err != nil {
		t.Fatal(err)
	}
}

func TestRecordRefusesUnfinishedRoot(t *testing.T) {
	tmpl := loadFixture(t, "minimal.yaml")
	root := model.WorkRequest{TaskType: model.TaskWorkflow, Status: model.StatusRunning}
	if err := NewMetrics(MetricsOptions{}).Record(Run{Template: tmpl, Root: &root}); err == nil {
		t.Fatal("a running root was recorded")
	}
}
