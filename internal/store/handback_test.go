package store_test

import (
	"context"
	"slices"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestRunnerHandBackAndResume covers what the runner protocol needs of the
// store: a reconnecting runner keeps the request it still runs, a runner
// shutting down hands its request back, and a finished request that did not
// succeed can be retried.
func TestRunnerHandBackAndResume(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		a, b := f.worker(t, "amd64"), f.worker(t, "amd64")
		got, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		if got.ID != a.ID {
			t.Fatalf("claimed %d, want %d", got.ID, a.ID)
		}
		// reconnecting while still running it: kept
		_, requeued, err := f.s.ConnectWorker(ctx, f.amd64.ID, f.amd64.Metadata, a.ID)
		must(t, err)
		if len(requeued) != 0 {
			t.Fatalf("kept request was requeued: %v", requeued)
		}
		cur, _ := f.s.WorkRequests().Get(ctx, a.ID, nil)
		if cur.Status != model.StatusRunning || *cur.WorkerID != f.amd64.ID {
			t.Fatalf("after resume: %+v", cur)
		}
		// another worker cannot hand it back
		if _, err := f.s.RequeueWorkRequest(ctx, a.ID, f.arm64.ID, "not mine"); err == nil {
			t.Fatal("a worker handed back another worker's request")
		}
		back, err := f.s.RequeueWorkRequest(ctx, a.ID, f.amd64.ID, "shutting down")
		must(t, err)
		if back.Status != model.StatusPending || back.WorkerID != nil || back.Retries != 1 {
			t.Fatalf("handed back: %+v", back)
		}
		// reconnecting without listing it: requeued
		got, err = f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		_, requeued, err = f.s.ConnectWorker(ctx, f.amd64.ID, f.amd64.Metadata)
		must(t, err)
		if !slices.Equal(requeued, []int64{got.ID}) {
			t.Fatalf("requeued %v, want [%d]", requeued, got.ID)
		}
		// abort then retry
		_, err = f.s.AbortWorkRequest(ctx, b.ID, "test", nil)
		must(t, err)
		re, err := f.s.RetryWorkRequest(ctx, b.ID, nil)
		must(t, err)
		if re.Status != model.StatusPending || re.Retries != 1 || re.CompletedAt != nil {
			t.Fatalf("retried: %+v", re)
		}
		// but a completed request cannot be moved by a plain update
		got, err = f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		_, err = f.s.CompleteWorkRequest(ctx, got.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		_, err = f.s.WorkRequests().Update(ctx, got.ID, nil, func(wr *model.WorkRequest) error {
			wr.Status = model.StatusPending
			return nil
		})
		fieldError(t, err, "status", store.Conflict)
	})
}
