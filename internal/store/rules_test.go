package store_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// Unit tests of lifecycle rules that only end-to-end tests pinned before:
// each names the rule it checks, so that a failure says which one broke.

// TestLostWorkRetriesThenFails: a request whose worker is lost goes back
// to the queue, counting a retry, until it has used max_retries; the next
// loss ends it with an error saying so. Its dependents are then aborted
// and its workflow fails once the last step has ended. The worker that
// lost it can no longer report it, whoever runs it now.
func TestLostWorkRetriesThenFails(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		now := f.fakeClock()
		other := &model.Worker{Name: "amd64-2", WorkerType: model.WorkerExternal, Enabled: true}
		must(t, f.s.Workers().Create(ctx, other))
		other, _, err := f.s.ConnectWorker(ctx, other.ID, f.amd64.Metadata)
		must(t, err)
		root, amd, arm, publish := f.matrixWorkflow(t) // builds have max_retries 1

		if got := f.claim(t, f.amd64); got.ID != amd.ID {
			t.Fatalf("amd64 claimed %d, want the amd64 build %d", got.ID, amd.ID)
		}
		*now = now.Add(heartbeatTimeout + time.Microsecond)
		touch(t, f.s, other.ID)
		f.requeueLost(t, amd.ID) // first loss: back to the queue
		if got, _ := f.s.WorkRequests().Get(ctx, amd.ID, nil); got.Status != model.StatusPending || got.Retries != 1 {
			t.Fatalf("after the first loss: %s, %d retries", got.Status, got.Retries)
		}
		_, err = f.s.CompleteWorkRequest(ctx, amd.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		fieldError(t, err, "status", store.Conflict)
		if got := f.claim(t, other); got.ID != amd.ID {
			t.Fatalf("amd64-2 claimed %d, want %d", got.ID, amd.ID)
		}
		_, err = f.s.CompleteWorkRequest(ctx, amd.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		fieldError(t, err, "worker", store.Conflict)

		*now = now.Add(heartbeatTimeout + time.Microsecond)
		f.requeueLost(t, amd.ID) // second loss: its one retry is used
		got, err := f.s.WorkRequests().Get(ctx, amd.ID, nil)
		must(t, err)
		if got.Status != model.StatusCompleted || got.Result != model.ResultError || got.Retries != 1 ||
			!strings.Contains(string(got.Output), "gave up after 1 retries") {
			t.Fatalf("after the second loss: %s/%s, %d retries, output %s", got.Status, got.Result, got.Retries, got.Output)
		}
		if st, _ := f.status(t, publish.ID); st != model.StatusAborted {
			t.Fatalf("the dependent publish step is %s, want aborted", st)
		}
		if st, _ := f.status(t, root.ID); st != model.StatusRunning {
			t.Fatalf("the workflow is %s while its arm64 build is still pending", st)
		}
		_, _, err = f.s.ConnectWorker(ctx, f.arm64.ID, f.arm64.Metadata)
		must(t, err)
		if got := f.claim(t, f.arm64); got.ID != arm.ID {
			t.Fatalf("arm64 claimed %d, want %d", got.ID, arm.ID)
		}
		_, err = f.s.CompleteWorkRequest(ctx, arm.ID, f.arm64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		if st, res := f.status(t, root.ID); st != model.StatusCompleted || res != model.ResultFailure {
			t.Fatalf("the workflow is %s/%s after its last step, want completed/failure", st, res)
		}
		diffs, err := f.s.CheckTotals(ctx)
		must(t, err)
		if len(diffs) > 0 {
			t.Fatal(diffs)
		}
	})
}

// TestEveryInterruptionCountsARetry: the three ways a run is cut short —
// the worker goes silent, the runner hands the request back, the runner
// restarts without it — each count one retry against the same limit.
func TestEveryInterruptionCountsARetry(t *testing.T) {
	ctx := context.Background()
	interruptions := map[string]func(f *farm, now *time.Time, wr *model.WorkRequest) error{
		"silence": func(f *farm, now *time.Time, _ *model.WorkRequest) error {
			*now = now.Add(heartbeatTimeout + time.Microsecond)
			_, err := f.s.RequeueLostWork(ctx, heartbeatTimeout)
			return err
		},
		"hand back": func(f *farm, _ *time.Time, wr *model.WorkRequest) error {
			_, err := f.s.RequeueWorkRequest(ctx, wr.ID, f.amd64.ID, "shutting down")
			return err
		},
		"restart": func(f *farm, _ *time.Time, _ *model.WorkRequest) error {
			_, _, err := f.s.ConnectWorker(ctx, f.amd64.ID, f.amd64.Metadata)
			return err
		},
	}
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		now := f.fakeClock()
		for name, interrupt := range interruptions {
			wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID, MaxRetries: 2,
				Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
			must(t, f.s.SubmitWorkRequest(ctx, wr))
			for attempt := range 3 {
				_, _, err := f.s.ConnectWorker(ctx, f.amd64.ID, f.amd64.Metadata)
				must(t, err)
				if got := f.claim(t, f.amd64); got.ID != wr.ID {
					t.Fatalf("%s: claimed %d, want %d", name, got.ID, wr.ID)
				}
				must(t, interrupt(f, now, wr))
				got, err := f.s.WorkRequests().Get(ctx, wr.ID, nil)
				must(t, err)
				want := model.StatusPending
				if attempt == 2 {
					want = model.StatusCompleted
				}
				if got.Status != want || got.Retries != min(attempt+1, 2) {
					t.Fatalf("%s, attempt %d: %s after %d retries, want %s after %d", name, attempt+1, got.Status, got.Retries, want, min(attempt+1, 2))
				}
				if want == model.StatusCompleted && (got.Result != model.ResultError || !strings.Contains(string(got.Output), "gave up after 2 retries")) {
					t.Fatalf("%s: ended %s with %s", name, got.Result, got.Output)
				}
			}
		}
	})
}

// TestDependentWaitsForEveryDependency: a blocked request becomes pending
// when its last dependency succeeds, not its first, and is aborted, saying
// why, as soon as one fails. A request whose dependencies have all
// succeeded already is pending from the start.
func TestDependentWaitsForEveryDependency(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		run := func(w *model.Worker, want *model.WorkRequest, r model.Result) {
			t.Helper()
			if got := f.claim(t, w); got.ID != want.ID {
				t.Fatalf("%s claimed %d, want %d", w.Name, got.ID, want.ID)
			}
			_, err := f.s.CompleteWorkRequest(ctx, want.ID, w.ID, store.Completion{Result: r})
			must(t, err)
		}
		a, b := f.worker(t, "amd64"), f.worker(t, "arm64")
		both := f.worker(t, "i386", a.ID, b.ID)
		run(f.amd64, a, model.ResultSuccess)
		if st, _ := f.status(t, both.ID); st != model.StatusBlocked {
			t.Fatalf("with one of two dependencies done the dependent is %s, want blocked", st)
		}
		run(f.arm64, b, model.ResultSuccess)
		if st, _ := f.status(t, both.ID); st != model.StatusPending {
			t.Fatalf("with both dependencies done the dependent is %s, want pending", st)
		}
		if late := f.worker(t, "i386", a.ID, b.ID); late.Status != model.StatusPending {
			t.Fatalf("a request on dependencies that already succeeded is %s, want pending", late.Status)
		}

		c, d := f.worker(t, "arm64"), f.worker(t, "arm64")
		after := f.worker(t, "i386", c.ID, d.ID)
		run(f.arm64, c, model.ResultFailure)
		got, err := f.s.WorkRequests().Get(ctx, after.ID, nil)
		must(t, err)
		if got.Status != model.StatusAborted || !strings.Contains(string(got.Output), "dependency "+itoa(c.ID)+" ended completed/failure") {
			t.Fatalf("the dependent of a failed request is %s: %s", got.Status, got.Output)
		}
		if st, _ := f.status(t, d.ID); st != model.StatusPending {
			t.Fatalf("the failed request's sibling dependency is %s, want pending: only dependents are aborted", st)
		}
	})
}

// TestWorkflowRootSettlesWithItsLastChild: a workflow's root completes
// when its last step ends, not before — success when every step succeeded
// or was skipped, failure otherwise — and a workflow without steps
// succeeds at once.
func TestWorkflowRootSettlesWithItsLastChild(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		workflow := func(results ...model.Result) (*model.WorkRequest, []*model.WorkRequest) {
			t.Helper()
			root := &model.WorkRequest{TaskName: "sequence", WorkspaceID: f.ws.ID, CreatedBy: &f.admin}
			var steps []store.WorkflowStep
			for i := range results {
				steps = append(steps, store.WorkflowStep{Request: &model.WorkRequest{TaskType: model.TaskServer, TaskName: "noop",
					StepName: "step-" + itoa(int64(i))}})
			}
			must(t, f.s.SubmitWorkflow(ctx, root, steps))
			var kids []*model.WorkRequest
			for _, s := range steps {
				kids = append(kids, s.Request)
			}
			return root, kids
		}
		finish := func(root *model.WorkRequest, results ...model.Result) (model.Status, model.Result) {
			t.Helper()
			for i, r := range results {
				if st, _ := f.status(t, root.ID); st != model.StatusRunning {
					t.Fatalf("the root is %s with %d of %d steps ended", st, i, len(results))
				}
				wr := f.claim(t, f.server)
				_, err := f.s.CompleteWorkRequest(ctx, wr.ID, f.server.ID, store.Completion{Result: r})
				must(t, err)
			}
			return f.status(t, root.ID)
		}
		for _, c := range []struct {
			steps []model.Result
			want  model.Result
		}{
			{[]model.Result{model.ResultSuccess, model.ResultSkipped, model.ResultSuccess}, model.ResultSuccess},
			{[]model.Result{model.ResultFailure, model.ResultSuccess}, model.ResultFailure},
			{[]model.Result{model.ResultSuccess, model.ResultError}, model.ResultFailure},
		} {
			root, _ := workflow(c.steps...)
			if st, res := finish(root, c.steps...); st != model.StatusCompleted || res != c.want {
				t.Fatalf("steps %v: the root is %s/%s, want completed/%s", c.steps, st, res, c.want)
			}
		}
		root, _ := workflow()
		if st, res := f.status(t, root.ID); st != model.StatusCompleted || res != model.ResultSuccess {
			t.Fatalf("a workflow without steps is %s/%s, want completed/success", st, res)
		}
	})
}
