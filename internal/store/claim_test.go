package store_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// claimKeys reads the columns a claim matches Worker tasks on; "-" stands
// for NULL.
func claimKeys(t *testing.T, s *store.SQL, id int64) (arch, backend string) {
	t.Helper()
	var a, b sql.NullString
	if err := s.DB().QueryRow("SELECT host_architecture, backend FROM work_requests WHERE id = $1", id).Scan(&a, &b); err != nil {
		t.Fatal(err)
	}
	arch, backend = "-", "-"
	if a.Valid {
		arch = a.String
	}
	if b.Valid {
		backend = b.String
	}
	return arch, backend
}

func wantKeys(t *testing.T, s *store.SQL, id int64, arch, backend string) {
	t.Helper()
	if a, b := claimKeys(t, s, id); a != arch || b != backend {
		t.Fatalf("request %d: host_architecture, backend = %s, %s; want %s, %s", id, a, b, arch, backend)
	}
}

// TestClaimKeysFollowTaskData pins that host_architecture and backend
// always say what the task data says, however a request came to be
// pending: submitted, as a workflow step, retried, requeued.
func TestClaimKeysFollowTaskData(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		plain := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID,
			Data: json.RawMessage(`{"host_architecture": "amd64"}`), MaxRetries: 3}
		must(t, f.s.SubmitWorkRequest(ctx, plain))
		wantKeys(t, f.s, plain.ID, "amd64", "auto")
		unshare := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID,
			Data: json.RawMessage(`{"backend": "unshare", "host_architecture": "arm64"}`), MaxRetries: 1}
		must(t, f.s.SubmitWorkRequest(ctx, unshare))
		wantKeys(t, f.s, unshare.ID, "arm64", "unshare")
		srv := &model.WorkRequest{TaskType: model.TaskServer, TaskName: "noop", WorkspaceID: f.ws.ID,
			Data: json.RawMessage(`{"host_architecture": "amd64", "backend": "host"}`)}
		must(t, f.s.SubmitWorkRequest(ctx, srv))
		wantKeys(t, f.s, srv.ID, "-", "-") // only Worker tasks have them

		root := &model.WorkRequest{TaskName: "pair", WorkspaceID: f.ws.ID, CreatedBy: &f.admin}
		first := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", StepName: "i386",
			Data: json.RawMessage(`{"host_architecture": "i386", "backend": "host"}`)}
		second := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", StepName: "after",
			Data: json.RawMessage(`{"host_architecture": "arm64"}`)}
		must(t, f.s.SubmitWorkflow(ctx, root, []store.WorkflowStep{{Request: first}, {Request: second, After: []int{0}}}))
		wantKeys(t, f.s, root.ID, "-", "-")
		wantKeys(t, f.s, first.ID, "i386", "host")
		wantKeys(t, f.s, second.ID, "arm64", "auto")

		// the amd64+i386 worker has backend host: it gets plain, then the
		// i386 step, never the unshare request
		got, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		if got.ID != plain.ID {
			t.Fatalf("claimed %d, want %d", got.ID, plain.ID)
		}
		_, err = f.s.CompleteWorkRequest(ctx, plain.ID, f.amd64.ID, store.Completion{Result: model.ResultFailure})
		must(t, err)
		retried, err := f.s.RetryWorkRequest(ctx, plain.ID, nil)
		must(t, err)
		if retried.Status != model.StatusPending {
			t.Fatalf("retried request is %s", retried.Status)
		}
		wantKeys(t, f.s, plain.ID, "amd64", "auto")
		got, err = f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		if got.ID != plain.ID {
			t.Fatalf("after the retry the worker got %d, want %d again", got.ID, plain.ID)
		}
		// a lost worker's request goes back to pending, still claimable
		f.s.SetClock(func() time.Time { return time.Now().Add(time.Hour) })
		requeued, err := f.s.RequeueLostWork(ctx, time.Minute)
		must(t, err)
		f.s.SetClock(time.Now)
		if len(requeued) == 0 {
			t.Fatal("nothing requeued")
		}
		wantKeys(t, f.s, plain.ID, "amd64", "auto")
		_, _, err = f.s.ConnectWorker(ctx, f.amd64.ID, f.amd64.Metadata)
		must(t, err)
		got, err = f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		if got.ID != plain.ID {
			t.Fatalf("after the requeue the worker got %d, want %d", got.ID, plain.ID)
		}
		_, err = f.s.CompleteWorkRequest(ctx, plain.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		got, err = f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		if got.ID != first.ID {
			t.Fatalf("claimed %d, want the i386 step %d", got.ID, first.ID)
		}
		_, err = f.s.CompleteWorkRequest(ctx, first.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		if _, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID); !errors.Is(err, store.ErrNoWork) {
			t.Fatalf("the amd64 worker (backend host) got more work: %v", err)
		}
		// unblocked by its dependency, the arm64 step is the arm64 worker's
		got, err = f.s.ClaimWorkRequest(ctx, f.arm64.ID)
		must(t, err)
		if got.ID != second.ID {
			t.Fatalf("arm64 worker got %d, want the unblocked step %d", got.ID, second.ID)
		}
		wantKeys(t, f.s, second.ID, "arm64", "auto")
		diffs, err := f.s.CheckTotals(ctx)
		must(t, err)
		if len(diffs) > 0 {
			t.Fatal(diffs)
		}
	})
}

// TestOnPendingHearsEveryWayIntoTheQueue pins the hook the scheduler
// wakes its claimers with: every request that becomes pending is reported
// once, after commit, and nothing else is.
func TestOnPendingHearsEveryWayIntoTheQueue(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		var heard []int64
		f.s.OnPending(func(wr model.WorkRequest) {
			if wr.Status != model.StatusPending {
				t.Errorf("hook heard request %d as %s", wr.ID, wr.Status)
			}
			heard = append(heard, wr.ID)
		})
		expect := func(what string, ids ...int64) {
			t.Helper()
			if len(heard) != len(ids) {
				t.Fatalf("%s: heard %v, want %v", what, heard, ids)
			}
			for i := range ids {
				if heard[i] != ids[i] {
					t.Fatalf("%s: heard %v, want %v", what, heard, ids)
				}
			}
			heard = nil
		}
		first := f.worker(t, "amd64")
		expect("submitted", first.ID)
		second := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID,
			Data: json.RawMessage(`{"host_architecture": "amd64"}`), Dependencies: []int64{first.ID}, MaxRetries: 3}
		must(t, f.s.SubmitWorkRequest(ctx, second))
		expect("submitted blocked")
		bad := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID, Data: json.RawMessage(`{}`)}
		if err := f.s.SubmitWorkRequest(ctx, bad); err == nil {
			t.Fatal("a Worker request without host_architecture was accepted")
		}
		expect("refused")
		got, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		expect("claimed")
		_, err = f.s.CompleteWorkRequest(ctx, got.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		expect("unblocked", second.ID)
		got, err = f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		_, err = f.s.CompleteWorkRequest(ctx, got.ID, f.amd64.ID, store.Completion{Result: model.ResultError})
		must(t, err)
		expect("completed")
		_, err = f.s.RetryWorkRequest(ctx, second.ID, nil)
		must(t, err)
		expect("retried", second.ID)
		got, err = f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		_, err = f.s.RequeueWorkRequest(ctx, got.ID, f.amd64.ID, "handed back")
		must(t, err)
		expect("requeued", second.ID)
	})
}

// TestClaimOddNames: architecture and backend names outside the usual
// alphabet are bound as parameters, and still match exactly.
func TestClaimOddNames(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		odd := `o'brien; DROP TABLE work_requests; --`
		w := &model.Worker{Name: "odd", WorkerType: model.WorkerExternal, Enabled: true}
		must(t, f.s.Workers().Create(ctx, w))
		_, _, err := f.s.ConnectWorker(ctx, w.ID, model.WorkerMetadata{Architectures: []string{odd, "amd64"}, Backends: []string{"qemu 9"}})
		must(t, err)
		data, _ := json.Marshal(map[string]string{"host_architecture": odd, "backend": "qemu 9"})
		wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID, Data: data}
		must(t, f.s.SubmitWorkRequest(ctx, wr))
		wantKeys(t, f.s, wr.ID, odd, "qemu 9")
		if _, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID); !errors.Is(err, store.ErrNoWork) {
			t.Fatalf("the amd64 worker got the odd request: %v", err)
		}
		got, err := f.s.ClaimWorkRequest(ctx, w.ID)
		must(t, err)
		if got.ID != wr.ID {
			t.Fatalf("claimed %d, want %d", got.ID, wr.ID)
		}
	})
}

// TestCompleteAndClaim: a result with the next claim in one transaction
// leaves the same rows and totals as the two apart.
func TestCompleteAndClaim(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		first := f.worker(t, "amd64")
		after := f.worker(t, "i386", first.ID) // unblocked by first, in the same transaction
		other := f.worker(t, "amd64")
		got, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		if got.ID != first.ID {
			t.Fatalf("claimed %d, want %d", got.ID, first.ID)
		}
		// another worker's result is refused, and it claims nothing
		if _, _, err := f.s.CompleteAndClaim(ctx, first.ID, f.arm64.ID, store.Completion{Result: model.ResultSuccess}); err == nil {
			t.Fatal("a worker completed another worker's request")
		}
		if w, err := f.s.Workers().Get(ctx, f.arm64.ID, nil); err != nil || w.Busy {
			t.Fatalf("arm64 worker: %+v, %v", w, err)
		}
		done, next, err := f.s.CompleteAndClaim(ctx, first.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		if done.ID != first.ID || done.Status != model.StatusCompleted || done.Result != model.ResultSuccess {
			t.Fatalf("done: %+v", done)
		}
		// the unblocked step is older than other: it comes first
		if next == nil || next.ID != after.ID || next.Status != model.StatusRunning || *next.WorkerID != f.amd64.ID ||
			len(next.Dependencies) != 1 || next.Dependencies[0] != first.ID {
			t.Fatalf("next: %+v, want the unblocked i386 step %d running on the amd64 worker", next, after.ID)
		}
		done, next, err = f.s.CompleteAndClaim(ctx, after.ID, f.amd64.ID, store.Completion{Result: model.ResultFailure})
		must(t, err)
		if done.Result != model.ResultFailure || next == nil || next.ID != other.ID {
			t.Fatalf("done %+v, next %+v: want %d", done, next, other.ID)
		}
		// nothing left: the completion stands, the worker is idle
		done, next, err = f.s.CompleteAndClaim(ctx, other.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		if done.Status != model.StatusCompleted || next != nil {
			t.Fatalf("done %+v, next %+v", done, next)
		}
		w, err := f.s.Workers().Get(ctx, f.amd64.ID, nil)
		must(t, err)
		if w.Busy {
			t.Fatal("the worker is still busy")
		}
		diffs, err := f.s.CheckTotals(ctx)
		must(t, err)
		if len(diffs) > 0 {
			t.Fatal(diffs)
		}
	})
}

// TestConcurrentCompleteAndClaim: workers that take their next request with
// their result never share one, and the totals stay exact.
func TestConcurrentCompleteAndClaim(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		const n = 60
		for range n {
			f.worker(t, "amd64")
		}
		var workers []*model.Worker
		for i := range 6 {
			w := &model.Worker{Name: "cc" + strconv.Itoa(i), WorkerType: model.WorkerExternal, Enabled: true}
			must(t, f.s.Workers().Create(ctx, w))
			_, _, err := f.s.ConnectWorker(ctx, w.ID, model.WorkerMetadata{Architectures: []string{"amd64"}, Backends: []string{"host"}})
			must(t, err)
			workers = append(workers, w)
		}
		var mu sync.Mutex
		ran := map[int64]int{}
		var wg sync.WaitGroup
		for i, w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wr, err := f.s.ClaimWorkRequest(ctx, w.ID)
				for err == nil && wr != nil {
					mu.Lock()
					ran[wr.ID]++
					mu.Unlock()
					result := []model.Result{model.ResultSuccess, model.ResultFailure, model.ResultError}[(i+int(wr.ID))%3]
					_, wr, err = f.s.CompleteAndClaim(ctx, wr.ID, w.ID, store.Completion{Result: result,
						Statistics: &model.RuntimeStatistics{Duration: float64(wr.ID)}})
				}
				if err != nil && !errors.Is(err, store.ErrNoWork) {
					t.Error(err)
				}
			}()
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
		diffs, err := f.s.CheckTotals(ctx)
		must(t, err)
		if len(diffs) > 0 {
			t.Fatal(diffs)
		}
	})
}

// TestTouchWorker: a heartbeat is recorded, tells whether the worker is
// still marked connected and lists what it runs.
func TestTouchWorker(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
		f.s.SetClock(func() time.Time { return at })
		connected, running, err := f.s.TouchWorker(ctx, f.amd64.ID)
		must(t, err)
		w, err := f.s.Workers().Get(ctx, f.amd64.ID, nil)
		must(t, err)
		if !connected || running != nil || w.LastSeenAt == nil || !w.LastSeenAt.Equal(at) {
			t.Fatalf("connected %v, running %v, last seen %v", connected, running, w.LastSeenAt)
		}
		_, _, err = f.s.ConnectWorker(ctx, f.amd64.ID, model.WorkerMetadata{Architectures: []string{"amd64"}, Concurrent: 3})
		must(t, err)
		var ids []int64
		for range 3 {
			f.worker(t, "amd64")
			wr, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
			must(t, err)
			ids = append(ids, wr.ID)
		}
		_, err = f.s.CompleteWorkRequest(ctx, ids[1], f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		if _, running, err = f.s.TouchWorker(ctx, f.amd64.ID); err != nil || !slices.Equal(running, []int64{ids[0], ids[2]}) {
			t.Fatalf("running %v (%v), want %v", running, err, []int64{ids[0], ids[2]})
		}
		must(t, f.s.DisconnectWorker(ctx, f.amd64.ID))
		if connected, _, err = f.s.TouchWorker(ctx, f.amd64.ID); err != nil || connected {
			t.Fatalf("after disconnecting: connected %v, %v", connected, err)
		}
		if _, _, err := f.s.TouchWorker(ctx, 9999); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown worker: %v", err)
		}
	})
}

// touch records a heartbeat of worker id.
func touch(t *testing.T, s *store.SQL, id int64) {
	t.Helper()
	_, _, err := s.TouchWorker(context.Background(), id)
	must(t, err)
}

// TestDependentSubmittedWhileItsDependencyCompletes races the submission
// of a dependent with the completion of its dependency: whichever commits
// first, the dependent must not stay blocked behind a request that
// succeeded.
func TestDependentSubmittedWhileItsDependencyCompletes(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		for i := range 40 {
			dep := f.worker(t, "amd64")
			got, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
			must(t, err)
			if got.ID != dep.ID {
				t.Fatalf("claimed %d, want %d", got.ID, dep.ID)
			}
			dependent := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID,
				Data: json.RawMessage(`{"host_architecture": "arm64"}`), Dependencies: []int64{dep.ID}, MaxRetries: 1}
			var wg sync.WaitGroup
			wg.Go(func() {
				if err := f.s.SubmitWorkRequest(ctx, dependent); err != nil {
					t.Error(err)
				}
			})
			wg.Go(func() {
				if i%2 == 0 {
					_, err = f.s.CompleteWorkRequest(ctx, dep.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
				} else {
					_, _, err = f.s.CompleteAndClaim(ctx, dep.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
				}
				if err != nil {
					t.Error(err)
				}
			})
			wg.Wait()
			if t.Failed() {
				return
			}
			got, err = f.s.WorkRequests().Get(ctx, dependent.ID, nil)
			must(t, err)
			if got.Status != model.StatusPending {
				t.Fatalf("round %d: the dependent of a request that succeeded is %s", i, got.Status)
			}
			// the arm64 worker runs it, so that the next round starts idle
			got, err = f.s.ClaimWorkRequest(ctx, f.arm64.ID)
			must(t, err)
			_, err = f.s.CompleteWorkRequest(ctx, got.ID, f.arm64.ID, store.Completion{Result: model.ResultSuccess})
			must(t, err)
		}
	})
}
