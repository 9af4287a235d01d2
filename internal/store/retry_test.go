package store_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// matrixWorkflow submits builds for amd64 and arm64 and a publish step
// after both; it returns the root and the three children.
func (f *farm) matrixWorkflow(t *testing.T) (root, amd, arm, publish *model.WorkRequest) {
	t.Helper()
	root = &model.WorkRequest{TaskName: "matrix", WorkspaceID: f.ws.ID, CreatedBy: &f.admin}
	build := func(arch string) store.WorkflowStep {
		return store.WorkflowStep{Request: &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", StepName: "build-" + arch,
			Data: json.RawMessage(`{"host_architecture": "` + arch + `"}`), MaxRetries: 1}}
	}
	steps := []store.WorkflowStep{build("amd64"), build("arm64"),
		{Request: &model.WorkRequest{TaskType: model.TaskServer, TaskName: "noop", StepName: "publish"}, After: []int{0, 1}}}
	must(t, f.s.SubmitWorkflow(context.Background(), root, steps))
	return root, steps[0].Request, steps[1].Request, steps[2].Request
}

func (f *farm) status(t *testing.T, id int64) (model.Status, model.Result) {
	t.Helper()
	wr, err := f.s.WorkRequests().Get(context.Background(), id, nil)
	must(t, err)
	return wr.Status, wr.Result
}

// Aborting a workflow whose steps depend on each other aborts every step
// once: a step aborted as a sibling's dependent is not aborted again.
func TestAbortWorkflowWithDependentSteps(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		root, amd, arm, publish := f.matrixWorkflow(t)
		if _, err := f.s.AbortWorkRequest(context.Background(), root.ID, "stop", nil); err != nil {
			t.Fatal(err)
		}
		for _, wr := range []*model.WorkRequest{root, amd, arm, publish} {
			if st, _ := f.status(t, wr.ID); st != model.StatusAborted {
				t.Fatalf("%q is %s, want aborted", wr.StepName, st)
			}
		}
	})
}

// A failed step retried inside a running workflow brings back the steps
// that were aborted because of it, so the workflow can still succeed.
func TestRetryBringsBackAbortedDependents(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		root, amd, _, publish := f.matrixWorkflow(t)
		got, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		_, err = f.s.CompleteWorkRequest(ctx, got.ID, f.amd64.ID, store.Completion{Result: model.ResultFailure})
		must(t, err)
		if st, _ := f.status(t, publish.ID); st != model.StatusAborted {
			t.Fatalf("publish is %s after a failed build, want aborted", st)
		}
		_, err = f.s.RetryWorkRequest(ctx, amd.ID, nil)
		must(t, err)
		if st, _ := f.status(t, publish.ID); st != model.StatusBlocked {
			t.Fatalf("publish is %s after its dependency was retried, want blocked", st)
		}
		for _, w := range []*model.Worker{f.amd64, f.arm64, f.server} {
			wr, err := f.s.ClaimWorkRequest(ctx, w.ID)
			must(t, err)
			_, err = f.s.CompleteWorkRequest(ctx, wr.ID, w.ID, store.Completion{Result: model.ResultSuccess})
			must(t, err)
		}
		if st, res := f.status(t, root.ID); st != model.StatusCompleted || res != model.ResultSuccess {
			t.Fatalf("workflow is %s/%s, want completed/success", st, res)
		}
		diffs, err := f.s.CheckTotals(ctx)
		must(t, err)
		if len(diffs) > 0 {
			t.Fatal(diffs)
		}
	})
}

// A step a user aborted stays aborted when its dependency is retried.
func TestRetryLeavesUserAbortsAlone(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		_, amd, _, publish := f.matrixWorkflow(t)
		_, err := f.s.AbortWorkRequest(ctx, publish.ID, "not this time", nil)
		must(t, err)
		got, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		_, err = f.s.CompleteWorkRequest(ctx, got.ID, f.amd64.ID, store.Completion{Result: model.ResultFailure})
		must(t, err)
		_, err = f.s.RetryWorkRequest(ctx, amd.ID, nil)
		must(t, err)
		if st, _ := f.status(t, publish.ID); st != model.StatusAborted {
			t.Fatalf("publish is %s, want still aborted", st)
		}
	})
}

// A step retried after its workflow ended in failure reopens the
// workflow: it runs again until its steps have finished, and ends with
// the result they give this time.
func TestRetryAfterWorkflowFailedReopensIt(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		root, amd, _, publish := f.matrixWorkflow(t)
		run := func(w *model.Worker, result model.Result) {
			t.Helper()
			wr, err := f.s.ClaimWorkRequest(ctx, w.ID)
			must(t, err)
			if wr == nil {
				t.Fatalf("worker %s found nothing to claim", w.Name)
			}
			_, err = f.s.CompleteWorkRequest(ctx, wr.ID, w.ID, store.Completion{Result: result})
			must(t, err)
		}
		run(f.amd64, model.ResultFailure)
		run(f.arm64, model.ResultSuccess)
		if st, res := f.status(t, root.ID); st != model.StatusCompleted || res != model.ResultFailure {
			t.Fatalf("workflow is %s/%s after a failed step, want completed/failure", st, res)
		}
		_, err := f.s.RetryWorkRequest(ctx, amd.ID, nil)
		must(t, err)
		if st, res := f.status(t, root.ID); st != model.StatusRunning || res != model.ResultNone {
			t.Fatalf("workflow is %s/%s after a step was retried, want running", st, res)
		}
		run(f.amd64, model.ResultSuccess)
		if st, _ := f.status(t, publish.ID); st != model.StatusPending {
			t.Fatalf("publish is %s once its dependencies succeeded, want pending", st)
		}
		run(f.server, model.ResultSuccess)
		if st, res := f.status(t, root.ID); st != model.StatusCompleted || res != model.ResultSuccess {
			t.Fatalf("workflow is %s/%s, want completed/success", st, res)
		}
		diffs, err := f.s.CheckTotals(ctx)
		must(t, err)
		if len(diffs) > 0 {
			t.Fatal(diffs)
		}
	})
}
