package store_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// connectWith connects worker w again with capacity n, keeping what it
// runs.
func connectWith(t *testing.T, f *farm, w *model.Worker, n int, keep ...int64) {
	t.Helper()
	_, _, err := f.s.ConnectWorker(context.Background(), w.ID,
		model.WorkerMetadata{Architectures: []string{"amd64", "i386"}, Backends: []string{"host"}, Concurrent: n}, keep...)
	must(t, err)
}

// busy reads a worker's busy flag.
func busy(t *testing.T, f *farm, w *model.Worker) bool {
	t.Helper()
	got, err := f.s.Workers().Get(context.Background(), w.ID, nil)
	must(t, err)
	return got.Busy
}

func checkTotals(t *testing.T, f *farm) {
	t.Helper()
	diffs, err := f.s.CheckTotals(context.Background())
	must(t, err)
	if len(diffs) > 0 {
		t.Fatal(diffs)
	}
}

// TestClaimUpToCapacity: a worker whose metadata says concurrent 3 gets
// up to three requests at once and no more, by either kind of claim; it
// is busy while it holds one or more, and the running totals agree. A
// worker that comes back with a smaller capacity than it holds keeps what
// it holds and gets nothing until it has room.
func TestClaimUpToCapacity(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		connectWith(t, f, f.amd64, 3)
		var queued []int64
		for range 6 {
			queued = append(queued, f.worker(t, "amd64").ID)
		}
		var held []int64
		for i := range 3 {
			wr, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
			must(t, err)
			if wr.ID != queued[i] || wr.Status != model.StatusRunning || *wr.WorkerID != f.amd64.ID {
				t.Fatalf("claim %d: %+v, want %d running on the worker", i, wr, queued[i])
			}
			held = append(held, wr.ID)
			if !busy(t, f, f.amd64) {
				t.Fatalf("a worker holding %d requests is not busy", i+1)
			}
			checkTotals(t, f)
		}
		if wr, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID); !errors.Is(err, store.ErrWorkerBusy) {
			t.Fatalf("a fourth claim for a worker of capacity 3: %v, %v", wr, err)
		}
		// a result with the next claim frees a slot and fills it
		done, next, err := f.s.CompleteAndClaim(ctx, held[1], f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		if done.Status != model.StatusCompleted || next == nil || next.ID != queued[3] {
			t.Fatalf("done %+v, next %+v: want %d", done, next, queued[3])
		}
		held = []int64{held[0], held[2], next.ID}
		if _, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID); !errors.Is(err, store.ErrWorkerBusy) {
			t.Fatalf("after CompleteAndClaim the worker is full: %v", err)
		}
		checkTotals(t, f)

		// back with concurrent 1, keeping all three: it runs them out
		connectWith(t, f, f.amd64, 1, held...)
		for i, id := range held {
			if _, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID); !errors.Is(err, store.ErrWorkerBusy) {
				t.Fatalf("holding %d requests with capacity 1: %v", len(held)-i, err)
			}
			_, next, err := f.s.CompleteAndClaim(ctx, id, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
			must(t, err)
			if (next != nil) != (i == len(held)-1) {
				t.Fatalf("completing %d of %d with capacity 1 claimed %+v", i+1, len(held), next)
			}
			if i == len(held)-1 {
				held = []int64{next.ID}
			}
		}
		if !busy(t, f, f.amd64) {
			t.Fatal("the worker holds a request and is not busy")
		}
		_, err = f.s.CompleteWorkRequest(ctx, held[0], f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		if busy(t, f, f.amd64) {
			t.Fatal("a worker that holds nothing is busy")
		}
		// the capacity belongs to the worker: another one is not limited
		// by it
		wr, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		if _, err := f.s.CompleteWorkRequest(ctx, wr.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess}); err != nil {
			t.Fatal(err)
		}
		checkTotals(t, f)
	})
}

// TestConcurrentClaimsHoldCapacity: many goroutines claim for one worker
// of capacity 3 at once (as a session's claimer, its results and a stale
// session on another replica would), while others complete, abort and
// requeue its requests and a second worker competes for the queue. The
// worker never holds more than 3, no request is handed out twice, and
// the busy flag's running totals stay exact.
func TestConcurrentClaimsHoldCapacity(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		const capacity, n = 3, 90
		connectWith(t, f, f.amd64, capacity)
		other := &model.Worker{Name: "other", WorkerType: model.WorkerExternal, Enabled: true}
		must(t, f.s.Workers().Create(ctx, other))
		_, _, err := f.s.ConnectWorker(ctx, other.ID, model.WorkerMetadata{Architectures: []string{"amd64"}, Concurrent: 2})
		must(t, err)
		for range n {
			wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID,
				Data: []byte(`{"host_architecture": "amd64"}`), CreatedBy: &f.admin, MaxRetries: 100}
			must(t, f.s.SubmitWorkRequest(ctx, wr))
		}
		var (
			mu      sync.Mutex
			claimed = map[int64]int{} // claims of each request, hand-backs undone
			maxHeld atomic.Int64
			wg      sync.WaitGroup
		)
		running := func(w int64) int64 {
			var c int64
			if err := f.s.DB().QueryRow("SELECT COUNT(*) FROM work_requests WHERE worker_id = $1 AND status = 'running'", w).Scan(&c); err != nil {
				t.Error(err)
			}
			return c
		}
		work := func(g int, w *model.Worker) {
			defer wg.Done()
			for i := 0; ; i++ {
				wr, err := f.s.ClaimWorkRequest(ctx, w.ID)
				switch {
				case errors.Is(err, store.ErrNoWork):
					return
				case errors.Is(err, store.ErrWorkerBusy):
					continue
				case err != nil:
					t.Error(err)
					return
				}
				if w == f.amd64 {
					h := running(w.ID)
					for m := maxHeld.Load(); h > m && !maxHeld.CompareAndSwap(m, h); m = maxHeld.Load() {
					}
				}
				mu.Lock()
				claimed[wr.ID]++
				mu.Unlock()
				switch (g + i) % 5 {
				case 0: // aborted by someone else
					_, err = f.s.AbortWorkRequest(ctx, wr.ID, "test", nil)
				case 1: // handed back: it will be claimed again
					mu.Lock()
					claimed[wr.ID]--
					mu.Unlock()
					_, err = f.s.RequeueWorkRequest(ctx, wr.ID, w.ID, "test")
				default:
					_, err = f.s.CompleteWorkRequest(ctx, wr.ID, w.ID, store.Completion{Result: model.ResultSuccess})
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}
		for g := range 6 {
			wg.Add(1)
			go work(g, f.amd64)
		}
		wg.Add(1)
		go work(6, other)
		wg.Wait()
		if m := maxHeld.Load(); m > capacity {
			t.Errorf("the worker held at least %d requests at once, capacity %d", m, capacity)
		}
		if len(claimed) != n {
			t.Errorf("%d requests ran, want %d", len(claimed), n)
		}
		for id, c := range claimed {
			if c != 1 {
				t.Errorf("request %d ran %d times", id, c)
			}
		}
		for _, w := range []*model.Worker{f.amd64, other} {
			if busy(t, f, w) {
				t.Errorf("worker %s holds nothing and is busy", w.Name)
			}
		}
		checkTotals(t, f)
		var left int
		must(t, f.s.DB().QueryRow("SELECT COUNT(*) FROM work_requests WHERE status IN ('pending', 'running')").Scan(&left))
		if left != 0 {
			t.Errorf("%d requests left pending or running", left)
		}
	})
}
