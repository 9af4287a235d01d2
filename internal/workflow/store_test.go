package workflow_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/openmetrics"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
	"github.com/kiln-build/kiln/internal/workflow"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// farm is a store with a scope, a workspace, an admin, runners for amd64
// (+i386) and arm64, a server worker, and the template metrics wired to
// the store's OnFinish hook as the server wires them.
type farm struct {
	st       *store.SQL
	ws       *model.Workspace
	admin    int64
	workers  []*model.Worker
	clock    *clock
	metrics  *workflow.Metrics
	recorder *workflow.Recorder
}

func newFarm(t *testing.T, dsn string) *farm {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	must(t, err)
	t.Cleanup(func() { st.Close() })
	c := &clock{t: time.Now().UTC().Truncate(time.Second)}
	st.SetClock(c.Now)
	_, err = st.Bootstrap(ctx, "kiln_admin_secret_for_tests", t.TempDir())
	must(t, err)
	admin, err := st.Users().Lookup(ctx, store.AdminUsername, nil)
	must(t, err)
	sc := &model.Scope{Name: "debian"}
	must(t, st.Scopes().Create(ctx, sc))
	ws := &model.Workspace{Name: "main", ScopeID: sc.ID, Public: true}
	must(t, st.Workspaces().Create(ctx, ws))
	f := &farm{st: st, ws: ws, admin: admin.ID, clock: c}
	for _, w := range []struct {
		name  string
		typ   model.WorkerType
		archs []string
	}{{"amd64-1", model.WorkerExternal, []string{"amd64", "i386"}}, {"arm64-1", model.WorkerExternal, []string{"arm64"}}, {"server", model.WorkerServer, nil}} {
		wk := &model.Worker{Name: w.name, WorkerType: w.typ, Enabled: true}
		must(t, st.Workers().Create(ctx, wk))
		meta := model.WorkerMetadata{Architectures: w.archs, Backends: []string{"host"}}
		wk, _, err := st.ConnectWorker(ctx, wk.ID, meta)
		must(t, err)
		f.workers = append(f.workers, wk)
	}
	f.metrics = workflow.NewMetrics(workflow.MetricsOptions{Now: c.Now})
	f.recorder = workflow.NewRecorder(f.metrics, st, nil)
	st.OnFinish(f.recorder.Hook)
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *farm) saveTemplate(t *testing.T, fixture string) *model.WorkflowTemplate {
	t.Helper()
	data, err := os.ReadFile("testdata/good/" + fixture)
	must(t, err)
	tmpl, err := workflow.Parse(fixture, data)
	must(t, err)
	tmpl.WorkspaceID = f.ws.ID
	m, err := tmpl.Model()
	must(t, err)
	must(t, f.st.WorkflowTemplates().Create(context.Background(), m))
	return m
}

// work claims and completes whatever the workers can take until nothing is
// left, each task "running" for 3 s by the runner's measure. outcome gives
// the result of a step by name (success by default); it is called again
// for a retried step.
func (f *farm) work(t *testing.T, outcome func(step string) model.Result) {
	t.Helper()
	ctx := context.Background()
	for progress := true; progress; {
		progress = false
		for _, w := range f.workers {
			wr, err := f.st.ClaimWorkRequest(ctx, w.ID)
			if errors.Is(err, store.ErrNoWork) {
				continue
			}
			must(t, err)
			progress = true
			f.clock.Advance(3 * time.Second)
			res := model.ResultSuccess
			if outcome != nil {
				res = outcome(wr.StepName)
			}
			_, err = f.st.CompleteWorkRequest(ctx, wr.ID, w.ID, store.Completion{Result: res,
				Statistics: &model.RuntimeStatistics{Duration: 3}})
			must(t, err)
		}
	}
}

func (f *farm) get(t *testing.T, id int64) *model.WorkRequest {
	t.Helper()
	wr, err := f.st.WorkRequests().Get(context.Background(), id, nil)
	must(t, err)
	return wr
}

func (f *farm) child(t *testing.T, root int64, step string) *model.WorkRequest {
	t.Helper()
	kids, err := f.st.WorkRequests().List(context.Background(), store.Query{Filter: map[string]string{"parent": itoa(root)}})
	must(t, err)
	for i := range kids {
		if kids[i].StepName == step {
			return &kids[i]
		}
	}
	t.Fatalf("workflow %d has no step %s", root, step)
	return nil
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

// Workflows started from a template run through the store's lifecycle;
// their metrics reach the collector through OnFinish, the public figures
// (workflow_templates, user_activity, work_requests) follow.
func TestWorkflowsThroughTheStore(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		tmpl := f.saveTemplate(t, "matrix-build.yaml")
		start := func() *model.WorkRequest {
			t.Helper()
			root, err := workflow.Start(ctx, f.st, tmpl, map[string]string{"version": "1.0"}, &f.admin)
			must(t, err)
			return root
		}

		// 1: everything succeeds
		r1 := start()
		if r1.Status != model.StatusRunning || r1.TaskName != "matrix" || r1.WorkflowTemplateID == nil {
			t.Fatalf("root %+v", r1)
		}
		pub := f.child(t, r1.ID, "publish")
		if pub.Status != model.StatusBlocked || len(pub.Dependencies) != 3 {
			t.Fatalf("publish is %s with %v, want blocked on the three builds", pub.Status, pub.Dependencies)
		}
		build := f.child(t, r1.ID, "build-i386")
		var data map[string]any
		must(t, json.Unmarshal(build.Data, &data))
		if data["label"] != "hello 1.0 on i386" || data["host_architecture"] != "i386" || data["backend"] != "auto" {
			t.Fatalf("build-i386 task data %s", build.Data)
		}
		f.work(t, nil)
		if got := f.get(t, r1.ID); got.Status != model.StatusCompleted || got.Result != model.ResultSuccess {
			t.Fatalf("workflow 1 ended %s/%s, want completed/success", got.Status, got.Result)
		}

		// 2: build-i386 fails once, is retried while its siblings wait, then
		// succeeds: it counts once, as Succeeded
		r2 := start()
		failedOnce := false
		f.work(t, func(step string) model.Result {
			if step == "build-i386" && !failedOnce {
				failedOnce = true
				return model.ResultFailure
			}
			return model.ResultSuccess
		})
		// publish was aborted with the failed build; the workflow is failed…
		if got := f.get(t, r2.ID); got.Status != model.StatusCompleted || got.Result != model.ResultFailure {
			t.Fatalf("workflow 2 ended %s/%s before the retry, want completed/failure", got.Status, got.Result)
		}

		// 3: build-i386 fails, is retried before the workflow ends, succeeds
		r3 := start()
		i386 := f.child(t, r3.ID, "build-i386")
		var held *model.WorkRequest
		// the arm64 runner holds its build so the workflow cannot end
		held, err := f.st.ClaimWorkRequest(ctx, f.workers[1].ID)
		must(t, err)
		wr, err := f.st.ClaimWorkRequest(ctx, f.workers[0].ID) // amd64 first (same priority, older)
		must(t, err)
		_, err = f.st.CompleteWorkRequest(ctx, wr.ID, f.workers[0].ID, store.Completion{Result: model.ResultSuccess, Statistics: &model.RuntimeStatistics{Duration: 3}})
		must(t, err)
		wr, err = f.st.ClaimWorkRequest(ctx, f.workers[0].ID)
		must(t, err)
		if wr.ID != i386.ID {
			t.Fatalf("claimed %s, want build-i386", wr.StepName)
		}
		_, err = f.st.CompleteWorkRequest(ctx, wr.ID, f.workers[0].ID, store.Completion{Result: model.ResultFailure, Statistics: &model.RuntimeStatistics{Duration: 1}})
		must(t, err)
		_, err = f.st.RetryWorkRequest(ctx, i386.ID, nil)
		must(t, err)
		_, err = f.st.CompleteWorkRequest(ctx, held.ID, f.workers[1].ID, store.Completion{Result: model.ResultSuccess, Statistics: &model.RuntimeStatistics{Duration: 3}})
		must(t, err)
		if got := f.get(t, r3.ID); got.Status != model.StatusRunning {
			t.Fatalf("workflow 3 is %s while its retried step waits, want running", got.Status)
		}
		f.work(t, nil)
		if got := f.get(t, r3.ID); got.Status != model.StatusCompleted || got.Result != model.ResultSuccess {
			t.Fatalf("workflow 3 ended %s/%s, want completed/success after the retry", got.Status, got.Result)
		}
		if got := f.get(t, i386.ID); got.Retries != 1 {
			t.Fatalf("build-i386 has %d retries, want 1", got.Retries)
		}

		// 4: aborted by its user: children are aborted with it
		r4 := start()
		_, err = f.st.AbortWorkRequest(ctx, r4.ID, "changed my mind", nil)
		must(t, err)
		if got := f.child(t, r4.ID, "build-arm64"); got.Status != model.StatusAborted {
			t.Fatalf("child of an aborted workflow is %s", got.Status)
		}

		must(t, f.recorder.Drain(ctx))
		want := `
# HELP kiln_workflow_runs_total Workflow runs by status.
# TYPE kiln_workflow_runs_total counter
kiln_workflow_runs_total{status="Aborted",template="build-all",workspace="main"} 1
kiln_workflow_runs_total{status="Failed",template="build-all",workspace="main"} 1
kiln_workflow_runs_total{status="Succeeded",template="build-all",workspace="main"} 2
# HELP kiln_workflow_build_duration_seconds Duration of the last build of each architecture.
# TYPE kiln_workflow_build_duration_seconds gauge
kiln_workflow_build_duration_seconds{arch="amd64",status="Aborted",step="build-amd64",template="build-all",workspace="main"} 0
kiln_workflow_build_duration_seconds{arch="amd64",status="Succeeded",step="build-amd64",template="build-all",workspace="main"} 3
kiln_workflow_build_duration_seconds{arch="arm64",status="Aborted",step="build-arm64",template="build-all",workspace="main"} 0
kiln_workflow_build_duration_seconds{arch="arm64",status="Succeeded",step="build-arm64",template="build-all",workspace="main"} 3
kiln_workflow_build_duration_seconds{arch="i386",status="Aborted",step="build-i386",template="build-all",workspace="main"} 0
kiln_workflow_build_duration_seconds{arch="i386",status="Failed",step="build-i386",template="build-all",workspace="main"} 3
kiln_workflow_build_duration_seconds{arch="i386",status="Succeeded",step="build-i386",template="build-all",workspace="main"} 3
# HELP kiln_workflow_builds_total Builds by architecture and final status; a retried build counts once.
# TYPE kiln_workflow_builds_total counter
kiln_workflow_builds_total{arch="amd64",status="Aborted",template="build-all",workspace="main"} 1
kiln_workflow_builds_total{arch="amd64",status="Succeeded",template="build-all",workspace="main"} 3
kiln_workflow_builds_total{arch="arm64",status="Aborted",template="build-all",workspace="main"} 1
kiln_workflow_builds_total{arch="arm64",status="Succeeded",template="build-all",workspace="main"} 3
kiln_workflow_builds_total{arch="i386",status="Aborted",template="build-all",workspace="main"} 1
kiln_workflow_builds_total{arch="i386",status="Failed",template="build-all",workspace="main"} 1
kiln_workflow_builds_total{arch="i386",status="Succeeded",template="build-all",workspace="main"} 2
`
		if err := testutil.CollectAndCompare(f.metrics, strings.NewReader(want),
			"kiln_workflow_runs_total", "kiln_workflow_build_duration_seconds", "kiln_workflow_builds_total"); err != nil {
			t.Fatal(err)
		}
		// the histogram saw the two successful runs only
		if n := testutil.CollectAndCount(f.metrics, "kiln_workflow_run_duration_seconds"); n != 1 {
			t.Fatalf("%d duration histogram series, want 1", n)
		}

		// the public endpoint's figures
		snap, err := f.st.Snapshot(ctx)
		must(t, err)
		mfs, _ := openmetrics.Gather(snap)
		var b bytes.Buffer
		enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			must(t, enc.Encode(mf))
		}
		text := b.String()
		for _, line := range []string{
			`workflow_templates{scope="debian",task_name="matrix"} 1`,
			`user_activity_bucket{scope="debian",le="1"} 1`,
			`user_activity_count{scope="debian"} 1`,
			`work_requests{scope="debian",status="completed",task_name="matrix",task_type="Workflow"} 3`,
			`work_requests{scope="debian",status="aborted",task_name="matrix",task_type="Workflow"} 1`,
		} {
			if !strings.Contains(text, line) {
				t.Errorf("public metrics lack %s", line)
			}
		}
		if t.Failed() {
			t.Log(text)
		}
	})
}
