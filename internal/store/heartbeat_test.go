package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
)

// heartbeatTimeout is the timeout these tests give RequeueLostWork.
const heartbeatTimeout = 30 * time.Second

// fakeClock makes the store's clock a variable the test moves by hand. It
// starts at the current time, so that rows the farm made before keep
// their order, and to the microsecond, the store's resolution.
func (f *farm) fakeClock() *time.Time {
	now := time.Now().UTC().Truncate(time.Microsecond)
	f.s.SetClock(func() time.Time { return now })
	return &now
}

// claim hands worker w the next request it can run.
func (f *farm) claim(t *testing.T, w *model.Worker) *model.WorkRequest {
	t.Helper()
	wr, err := f.s.ClaimWorkRequest(context.Background(), w.ID)
	must(t, err)
	return wr
}

// requeueLost runs the heartbeat rule and checks what it requeued.
func (f *farm) requeueLost(t *testing.T, want ...int64) {
	t.Helper()
	revoked, err := f.s.RequeueLostWork(context.Background(), heartbeatTimeout)
	must(t, err)
	got := []int64{}
	for _, r := range revoked {
		got = append(got, r.WorkRequest)
	}
	if !slices.Equal(got, append([]int64{}, want...)) {
		t.Fatalf("RequeueLostWork requeued %v, want %v", got, want)
	}
}

// holds fails unless request id runs on worker w, and w is connected.
func (f *farm) holds(t *testing.T, w *model.Worker, id int64) {
	t.Helper()
	wr, err := f.s.WorkRequests().Get(context.Background(), id, nil)
	must(t, err)
	if wr.Status != model.StatusRunning || wr.WorkerID == nil || *wr.WorkerID != w.ID {
		t.Fatalf("request %d is %s on worker %v, want running on %s", id, wr.Status, wr.WorkerID, w.Name)
	}
	f.connected(t, w, true)
}

func (f *farm) connected(t *testing.T, w *model.Worker, want bool) {
	t.Helper()
	got, err := f.s.Workers().Get(context.Background(), w.ID, nil)
	must(t, err)
	if (got.ConnectedAt != nil) != want {
		t.Fatalf("worker %s connected: %v, want %v", w.Name, got.ConnectedAt != nil, want)
	}
}

// TestHeartbeatRule pins when RequeueLostWork takes a worker's request
// away: when its last heartbeat is more than the timeout old. A worker
// that has just sent one keeps its work however long it has run it; at
// exactly the timeout it still keeps it; one microsecond later it loses it
// (the request goes back to pending, counting a retry) and is marked
// disconnected. A server's own in-process worker is judged alike (its
// scheduler touches it): a replica that died loses its Server tasks to
// the others.
func TestHeartbeatRule(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		now := f.fakeClock()
		a, b := f.worker(t, "amd64"), f.worker(t, "arm64")
		f.claim(t, f.amd64)
		f.claim(t, f.arm64)
		touch(t, f.s, f.amd64.ID)
		touch(t, f.s, f.arm64.ID)
		touch(t, f.s, f.server.ID)

		f.requeueLost(t) // just heard from both
		f.holds(t, f.amd64, a.ID)

		*now = now.Add(heartbeatTimeout)
		f.requeueLost(t) // silent for exactly the timeout: not yet lost
		f.holds(t, f.amd64, a.ID)
		f.holds(t, f.arm64, b.ID)

		touch(t, f.s, f.arm64.ID)
		touch(t, f.s, f.server.ID)
		*now = now.Add(time.Microsecond)
		f.requeueLost(t, a.ID) // amd64: a microsecond too long; arm64: just heard
		got, err := f.s.WorkRequests().Get(ctx, a.ID, nil)
		must(t, err)
		if got.Status != model.StatusPending || got.WorkerID != nil || got.StartedAt != nil || got.Retries != 1 {
			t.Fatalf("the lost worker's request: %+v", got)
		}
		f.connected(t, f.amd64, false)
		f.holds(t, f.arm64, b.ID) // claimed a timeout ago, heard a microsecond ago
		f.connected(t, f.server, true)

		// long after, arm64 keeps its work for as long as it keeps
		// sending heartbeats
		for range 10 {
			*now = now.Add(heartbeatTimeout / 3)
			touch(t, f.s, f.arm64.ID)
			f.requeueLost(t)
		}
		f.holds(t, f.arm64, b.ID)
		// the server worker, silent all that time, was judged lost too
		f.connected(t, f.server, false)
		diffs, err := f.s.CheckTotals(ctx)
		must(t, err)
		if len(diffs) > 0 {
			t.Fatal(diffs)
		}
	})
}

// TestDisconnectKeepsWorkUntilTheTimeout: a worker whose connection drops
// is disconnected at once, but its request stays assigned until the
// heartbeat timeout, so that a runner that reconnects quickly can still
// report it; after the timeout it is requeued like any lost worker's.
func TestDisconnectKeepsWorkUntilTheTimeout(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		now := f.fakeClock()
		kept, lost := f.worker(t, "amd64"), f.worker(t, "arm64")
		f.claim(t, f.amd64)
		f.claim(t, f.arm64)
		touch(t, f.s, f.amd64.ID)
		touch(t, f.s, f.arm64.ID)
		must(t, f.s.DisconnectWorker(ctx, f.amd64.ID))
		must(t, f.s.DisconnectWorker(ctx, f.arm64.ID))

		*now = now.Add(heartbeatTimeout)
		f.requeueLost(t)
		for _, wr := range []*model.WorkRequest{kept, lost} {
			if got, _ := f.s.WorkRequests().Get(ctx, wr.ID, nil); got.Status != model.StatusRunning {
				t.Fatalf("request %d of a disconnected worker is %s before the timeout", wr.ID, got.Status)
			}
		}
		// amd64 comes back in time, saying it still runs its request
		_, requeued, err := f.s.ConnectWorker(ctx, f.amd64.ID, f.amd64.Metadata, kept.ID)
		must(t, err)
		if len(requeued) != 0 {
			t.Fatalf("reconnecting requeued %v", requeued)
		}
		*now = now.Add(time.Microsecond)
		f.requeueLost(t, lost.ID)
		f.holds(t, f.amd64, kept.ID)
		f.connected(t, f.arm64, false)
	})
}
