package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// Several server replicas share one database: each test here opens the
// database once per replica and has the replicas do at the same moment
// what, done one after the other, is plainly right. On SQLite (one writer)
// they serialise; on PostgreSQL their transactions really overlap, under
// READ COMMITTED, and each must still see what the others committed.

const replicas = 3

// openReplicas opens the farm's database once more per extra replica.
func openReplicas(t *testing.T, f *farm, dsn string) []*store.SQL {
	t.Helper()
	out := []*store.SQL{f.s}
	for len(out) < replicas {
		out = append(out, open(t, dsn))
	}
	return out
}

// together runs fn(i) for i in [0, n) at the same moment, as far as
// goroutines allow, and waits for all of them.
func together(n int, fn func(i int)) {
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	wg.Add(n)
	for i := range n {
		go func() {
			defer wg.Done()
			ready.Done()
			<-start
			fn(i)
		}()
	}
	ready.Wait()
	close(start)
	wg.Wait()
}

// claimThenSucceedTogether has each worker of ws claim a request on s,
// then completes them all at the same moment with success, worker i's on
// replica rs[i].
func claimThenSucceedTogether(t *testing.T, s *store.SQL, rs []*store.SQL, ws []*model.Worker) {
	t.Helper()
	ctx := context.Background()
	held := make([]int64, len(ws))
	for i, w := range ws {
		wr, err := s.ClaimWorkRequest(ctx, w.ID)
		must(t, err)
		held[i] = wr.ID
	}
	together(len(ws), func(i int) {
		if _, err := rs[i].CompleteWorkRequest(ctx, held[i], ws[i].ID, store.Completion{Result: model.ResultSuccess}); err != nil {
			t.Error(err)
		}
	})
}

// connectWorkers creates n enabled amd64 workers, connected.
func connectWorkers(t *testing.T, s *store.SQL, prefix string, n int) []*model.Worker {
	t.Helper()
	ctx := context.Background()
	var ws []*model.Worker
	for i := range n {
		w := &model.Worker{Name: fmt.Sprintf("%s-%d", prefix, i), WorkerType: model.WorkerExternal, Enabled: true}
		must(t, s.Workers().Create(ctx, w))
		w, _, err := s.ConnectWorker(ctx, w.ID, model.WorkerMetadata{Architectures: []string{"amd64"}})
		must(t, err)
		ws = append(ws, w)
	}
	return ws
}

func amd64Step() *model.WorkRequest {
	return &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", Data: json.RawMessage(`{"host_architecture": "amd64"}`), MaxRetries: 3}
}

// TestSiblingsFinishingTogetherSettleTheirWorkflow: the last two steps of
// a workflow end at the same moment on two replicas. Each must not
// conclude from a snapshot taken before the other committed that a
// sibling still runs, or the workflow would run forever.
func TestSiblingsFinishingTogetherSettleTheirWorkflow(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		rs := openReplicas(t, f, dsn)
		ws := connectWorkers(t, f.s, "sibling", replicas)
		for round := range 15 {
			root := &model.WorkRequest{TaskName: "matrix", WorkspaceID: f.ws.ID, CreatedBy: &f.admin}
			steps := make([]store.WorkflowStep, replicas)
			for i := range steps {
				steps[i] = store.WorkflowStep{Request: amd64Step()}
			}
			must(t, f.s.SubmitWorkflow(ctx, root, steps))
			claimThenSucceedTogether(t, f.s, rs, ws)
			got, err := f.s.WorkRequests().Get(ctx, root.ID, nil)
			must(t, err)
			if got.Status != model.StatusCompleted || got.Result != model.ResultSuccess {
				t.Fatalf("round %d: the workflow is %s/%s after its last steps ended together, want completed/success", round, got.Status, got.Result)
			}
		}
	})
}

// TestDependenciesFinishingTogetherReleaseTheirDependent: a request
// waits for several others, which end at the same moment on different
// replicas; it must become pending, not stay blocked forever.
func TestDependenciesFinishingTogetherReleaseTheirDependent(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		rs := openReplicas(t, f, dsn)
		ws := connectWorkers(t, f.s, "dep", replicas)
		for round := range 15 {
			deps := make([]int64, replicas)
			for i := range deps {
				deps[i] = f.worker(t, "amd64").ID
			}
			dependent := f.worker(t, "arm64", deps...)
			claimThenSucceedTogether(t, f.s, rs, ws)
			got, err := f.s.WorkRequests().Get(ctx, dependent.ID, nil)
			must(t, err)
			if got.Status != model.StatusPending {
				t.Fatalf("round %d: the dependent is %s after its dependencies succeeded together, want pending", round, got.Status)
			}
		}
	})
}

// TestLostWorkIsRequeuedOnce: every replica runs the heartbeat rule; when
// they judge one silent runner at the same moment, its request goes back
// to the queue once — one retry counted, one requeue reported — and a
// request that meanwhile went to another runner stays with it.
func TestLostWorkIsRequeuedOnce(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		rs := openReplicas(t, f, dsn)
		for round := range 15 {
			lost := connectWorkers(t, f.s, fmt.Sprintf("lost-%d", round), 1)[0]
			wr := f.worker(t, "amd64") // one retry: a second requeue would fail it
			claimed, err := f.s.ClaimWorkRequest(ctx, lost.ID)
			must(t, err)
			if claimed.ID != wr.ID {
				t.Fatalf("claimed %d, want %d", claimed.ID, wr.ID)
			}
			var mu sync.Mutex
			var requeued []store.Revoked
			together(replicas, func(i int) {
				revoked, err := rs[i].RequeueLostWork(ctx, 0)
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				requeued = append(requeued, revoked...)
				mu.Unlock()
			})
			got, err := f.s.WorkRequests().Get(ctx, wr.ID, nil)
			must(t, err)
			if len(requeued) != 1 || got.Retries != 1 || got.Status != model.StatusPending {
				t.Fatalf("round %d: requeued %v, request %s with %d retries; want requeued once: pending with 1 retry", round, requeued, got.Status, got.Retries)
			}
			if want := (store.Revoked{WorkRequest: wr.ID, Worker: lost.ID, Attempt: 0}); requeued[0] != want {
				t.Fatalf("round %d: revoked %+v, want %+v: the attempt the lost worker ran", round, requeued[0], want)
			}
			// leave nothing pending for the next round's claim
			_, err = f.s.AbortWorkRequest(ctx, wr.ID, "done with it", nil)
			must(t, err)
		}
	})
}

// TestSharedContentReleasedOnce: artifacts that share a file's content
// are deleted at the same moment on different replicas (kiln expire, the
// sweep of incomplete artifacts, the API). The last one gone releases the
// content: exactly one replica reports it, for its bytes to be deleted
// once, and the file store's total_size drops by its size. Before, each
// replica saw the others' artifacts still holding it, and the content
// stayed counted, and stored, for ever.
func TestSharedContentReleasedOnce(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		rs := openReplicas(t, f, dsn)
		fs, err := f.s.DefaultFileStore(ctx)
		must(t, err)
		for round := range 15 {
			sha := fmt.Sprintf("%064x", round+1)
			arts := make([]*model.Artifact, replicas)
			for i := range arts {
				arts[i] = &model.Artifact{Category: "test:shared", WorkspaceID: f.ws.ID,
					Files: []model.ArtifactFile{{Path: "f", SHA256: sha, Size: 1000}}}
				must(t, f.s.Artifacts().Create(ctx, arts[i]))
				must(t, f.s.AttachFile(ctx, arts[i].ID, "f", fs.ID, nil))
			}
			released := make([][]store.Blob, replicas)
			together(replicas, func(i int) {
				var err error
				if released[i], err = rs[i].DeleteArtifact(ctx, arts[i].ID, nil); err != nil {
					t.Error(err)
				}
			})
			n := 0
			for _, r := range released {
				n += len(r)
			}
			got, err := f.s.FileStores().Get(ctx, fs.ID, nil)
			must(t, err)
			if n != 1 || got.TotalSize != fs.TotalSize {
				t.Fatalf("round %d: the content of %d artifacts deleted together was released %d times, total_size %d, want once and %d",
					round, replicas, n, got.TotalSize, fs.TotalSize)
			}
		}
		if diffs, err := f.s.CheckTotals(ctx); err != nil || len(diffs) > 0 {
			t.Fatal(err, diffs)
		}
	})
}

// TestExpiredUploadClaimsHandedOutOnce: every replica's sweeper expires
// the upload claims of processes that died, often at the same moment;
// each claim's content goes to one of them, so that its bytes are
// deleted once.
func TestExpiredUploadClaimsHandedOutOnce(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		rs := openReplicas(t, f, dsn)
		fs, err := f.s.DefaultFileStore(ctx)
		must(t, err)
		later := time.Now().Add(store.UploadClaimTTL + time.Minute)
		for _, r := range rs[1:] {
			r.SetClock(func() time.Time { return later })
		}
		for round := range 15 {
			const claims = 20
			for i := range claims {
				_, err := f.s.ClaimBlobUpload(ctx, fs.ID, fmt.Sprintf("%032x%032x", round+1, i))
				must(t, err)
			}
			got := make([][]store.Blob, replicas)
			together(replicas-1, func(i int) {
				var err error
				if got[i], err = rs[i+1].ExpireBlobClaims(ctx); err != nil {
					t.Error(err)
				}
			})
			seen := map[string]int{}
			for _, bs := range got {
				for _, b := range bs {
					seen[b.SHA256]++
				}
			}
			for sha, n := range seen {
				if n != 1 {
					t.Fatalf("round %d: the content %s of an expired upload claim was handed out %d times", round, sha, n)
				}
			}
			if len(seen) != claims {
				t.Fatalf("round %d: %d of %d expired claims handed out", round, len(seen), claims)
			}
		}
	})
}

// TestFoldWhileTheAutoscalerHoldsItsLock: one replica holds the worker
// pools' autoscaler lock for as long as it lives, on a connection of its
// own; every replica's folder must still fold the running totals. When
// the two used one advisory key, no fold ever happened on PostgreSQL
// while an autoscaler ran: every folder found the key taken and skipped
// its turn, and the totals stood still.
func TestFoldWhileTheAutoscalerHoldsItsLock(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		rs := openReplicas(t, f, dsn)
		lock, err := rs[1].SessionLock(ctx, store.AutoscalerLockKey)
		must(t, err)
		defer lock.Release()
		f.worker(t, "amd64") // a write, journaled
		for i, r := range rs {
			res, err := r.Fold(ctx)
			must(t, err)
			if res.Busy {
				t.Fatalf("replica %d's folder found the lock taken while the autoscaler held its own", i)
			}
		}
	})
}
