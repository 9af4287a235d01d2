package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

type farm struct {
	s      *store.SQL
	ws     *model.Workspace
	admin  int64
	amd64  *model.Worker
	arm64  *model.Worker
	server *model.Worker
}

func newFarm(t *testing.T, dsn string) *farm {
	t.Helper()
	ctx := context.Background()
	s := open(t, dsn)
	if _, err := s.Bootstrap(ctx, "kiln_admin", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	admin, err := s.Users().Lookup(ctx, store.AdminUsername, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := &model.Scope{Name: "debian"}
	must(t, s.Scopes().Create(ctx, sc))
	ws := &model.Workspace{Name: "main", ScopeID: sc.ID, Public: true}
	must(t, s.Workspaces().Create(ctx, ws))
	f := &farm{s: s, ws: ws, admin: admin.ID}
	mk := func(name string, typ model.WorkerType, archs ...string) *model.Worker {
		w := &model.Worker{Name: name, WorkerType: typ, Enabled: true}
		must(t, s.Workers().Create(ctx, w))
		meta := model.WorkerMetadata{Architectures: archs, Backends: []string{"host"}}
		if len(archs) > 0 {
			meta.HostArchitecture = archs[0]
		}
		w, _, err := s.ConnectWorker(ctx, w.ID, meta)
		must(t, err)
		return w
	}
	f.amd64 = mk("amd64-1", model.WorkerExternal, "amd64", "i386")
	f.arm64 = mk("arm64-1", model.WorkerExternal, "arm64")
	f.server = mk("server", model.WorkerServer)
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *farm) worker(t *testing.T, arch string, deps ...int64) *model.WorkRequest {
	t.Helper()
	wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID,
		Data: json.RawMessage(`{"host_architecture": "` + arch + `"}`), Dependencies: deps, CreatedBy: &f.admin, MaxRetries: 1}
	must(t, f.s.SubmitWorkRequest(context.Background(), wr))
	return wr
}

func TestClaimMatchesArchitectureAndOrder(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		i386 := f.worker(t, "i386")
		arm := f.worker(t, "arm64")
		urgent := f.worker(t, "amd64")
		if _, err := f.s.WorkRequests().Update(ctx, urgent.ID, nil, func(w *model.WorkRequest) error { w.Priority = 10; return nil }); err != nil {
			t.Fatal(err)
		}
		got, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		if got.ID != urgent.ID {
			t.Fatalf("amd64 worker got %d, want the high-priority %d", got.ID, urgent.ID)
		}
		if _, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID); err == nil {
			t.Fatal("a busy worker got a second request")
		}
		got, err = f.s.ClaimWorkRequest(ctx, f.arm64.ID)
		must(t, err)
		if got.ID != arm.ID {
			t.Fatalf("arm64 worker got %d, want %d", got.ID, arm.ID)
		}
		if _, err := f.s.ClaimWorkRequest(ctx, f.server.ID); !errors.Is(err, store.ErrNoWork) {
			t.Fatalf("server worker got external work: %v", err)
		}
		_, err = f.s.CompleteWorkRequest(ctx, urgent.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		got, err = f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		if got.ID != i386.ID {
			t.Fatalf("amd64+i386 worker got %d, want the i386 request %d", got.ID, i386.ID)
		}
	})
}

func TestDependenciesAndWorkflows(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		first := f.worker(t, "amd64")
		second := f.worker(t, "amd64", first.ID)
		if second.Status != model.StatusBlocked {
			t.Fatalf("dependent request is %s, want blocked", second.Status)
		}
		c, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		_, err = f.s.CompleteWorkRequest(ctx, c.ID, f.amd64.ID, store.Completion{Result: model.ResultFailure})
		must(t, err)
		got, err := f.s.WorkRequests().Get(ctx, second.ID, nil)
		must(t, err)
		if got.Status != model.StatusAborted {
			t.Fatalf("dependent of a failed request is %s, want aborted", got.Status)
		}

		// a matrix workflow: three architectures, then a step after all
		root := &model.WorkRequest{TaskName: "matrix", WorkspaceID: f.ws.ID, CreatedBy: &f.admin}
		var steps []store.WorkflowStep
		for _, a := range []string{"amd64", "i386", "arm64"} {
			steps = append(steps, store.WorkflowStep{Request: &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", StepName: "build-" + a,
				Data: json.RawMessage(`{"host_architecture": "` + a + `"}`)}})
		}
		steps = append(steps, store.WorkflowStep{Request: &model.WorkRequest{TaskType: model.TaskServer, TaskName: "noop", StepName: "publish"}, After: []int{0, 1, 2}})
		must(t, f.s.SubmitWorkflow(ctx, root, steps))
		for _, w := range []*model.Worker{f.amd64, f.amd64, f.arm64, f.server} {
			wr, err := f.s.ClaimWorkRequest(ctx, w.ID)
			must(t, err)
			_, err = f.s.CompleteWorkRequest(ctx, wr.ID, w.ID, store.Completion{Result: model.ResultSuccess})
			must(t, err)
		}
		got, err = f.s.WorkRequests().Get(ctx, root.ID, nil)
		must(t, err)
		if got.Status != model.StatusCompleted || got.Result != model.ResultSuccess {
			t.Fatalf("workflow root is %s/%s, want completed/success", got.Status, got.Result)
		}
		diffs, err := f.s.CheckTotals(ctx)
		must(t, err)
		if len(diffs) > 0 {
			t.Fatal(diffs)
		}
	})
}

func TestConcurrentClaimsNeverShareARequest(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		const n = 60
		for i := 0; i < n; i++ {
			f.worker(t, "amd64")
		}
		var workers []*model.Worker
		for i := 0; i < 6; i++ {
			w := &model.Worker{Name: "w" + string(rune('a'+i)), WorkerType: model.WorkerExternal, Enabled: true}
			must(t, f.s.Workers().Create(ctx, w))
			_, _, err := f.s.ConnectWorker(ctx, w.ID, model.WorkerMetadata{Architectures: []string{"amd64"}})
			must(t, err)
			workers = append(workers, w)
		}
		var mu sync.Mutex
		ran := map[int64]int{}
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Add(1)
			go func(w *model.Worker) {
				defer wg.Done()
				for {
					wr, err := f.s.ClaimWorkRequest(ctx, w.ID)
					if errors.Is(err, store.ErrNoWork) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					ran[wr.ID]++
					mu.Unlock()
					if _, err := f.s.CompleteWorkRequest(ctx, wr.ID, w.ID, store.Completion{Result: model.ResultSuccess}); err != nil {
						t.Error(err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		if len(ran) != n {
			t.Fatalf("%d requests ran, want %d", len(ran), n)
		}
		for id, c := range ran {
			if c != 1 {
				t.Fatalf("request %d ran %d times", id, c)
			}
		}
	})
}

func TestRetryRefusesWorkflowRoots(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		root := &model.WorkRequest{TaskName: "sequence", WorkspaceID: f.ws.ID, CreatedBy: &f.admin}
		step := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", StepName: "build",
			Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
		must(t, f.s.SubmitWorkflow(ctx, root, []store.WorkflowStep{{Request: step}}))
		wr, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		_, err = f.s.CompleteWorkRequest(ctx, wr.ID, f.amd64.ID, store.Completion{Result: model.ResultFailure})
		must(t, err)
		_, err = f.s.RetryWorkRequest(ctx, root.ID, nil)
		fieldError(t, err, "task_type", store.Conflict)
		list, err := f.s.WorkRequests().List(ctx, store.Query{Filter: map[string]string{"parent": itoa(root.ID)}})
		must(t, err)
		if len(list) != 1 || list[0].ID != step.ID {
			t.Fatalf("children of the root: %+v", list)
		}
	})
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
