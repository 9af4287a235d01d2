package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// pool creates a valid pool named name for architecture amd64, changed by
// edit.
func (f *farm) pool(t *testing.T, name string, edit func(*model.WorkerPool)) *model.WorkerPool {
	t.Helper()
	p := validPool(name)
	if edit != nil {
		edit(p)
	}
	must(t, f.s.WorkerPools().Create(context.Background(), p))
	return p
}

func validPool(name string) *model.WorkerPool {
	return &model.WorkerPool{Name: name, Provider: model.ProviderProcess, Enabled: true, Architectures: []string{"amd64"},
		Backends: []string{"unshare"}, MaxInstances: 2, IdleTimeout: model.Duration(time.Minute),
		StartupTimeout: model.Duration(time.Minute)}
}

func (f *farm) checkTotals(t *testing.T) {
	t.Helper()
	diffs, err := f.s.CheckTotals(context.Background())
	must(t, err)
	if len(diffs) > 0 {
		t.Fatalf("running totals disagree with a recount: %v", diffs)
	}
}

// TestWorkerPoolSettingsAreChecked: every bad setting is refused naming
// its field, and nothing is stored.
func TestWorkerPoolSettingsAreChecked(t *testing.T) {
	ctx := context.Background()
	neg := int64(-5)
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		f.pool(t, "taken", nil)
		for _, c := range []struct {
			field string
			kind  store.ErrorKind
			edit  func(*model.WorkerPool)
		}{
			{"name", store.Invalid, func(p *model.WorkerPool) { p.Name = "no spaces" }},
			{"name", store.Conflict, func(p *model.WorkerPool) { p.Name = "taken" }},
			{"provider", store.Invalid, func(p *model.WorkerPool) { p.Provider = "static" }},
			{"provider", store.Invalid, func(p *model.WorkerPool) { p.Provider = "" }},
			{"settings", store.Invalid, func(p *model.WorkerPool) { p.Settings = json.RawMessage(`[1]`) }},
			{"architectures", store.Invalid, func(p *model.WorkerPool) { p.Architectures = nil }},
			{"architectures", store.Invalid, func(p *model.WorkerPool) { p.Architectures = []string{"AMD 64"} }},
			{"architectures", store.Invalid, func(p *model.WorkerPool) { p.Architectures = []string{"amd64", "amd64"} }},
			{"backends", store.Invalid, func(p *model.WorkerPool) { p.Backends = []string{"auto"} }},
			{"concurrent", store.Invalid, func(p *model.WorkerPool) { p.Concurrent = -1 }},
			{"concurrent", store.Invalid, func(p *model.WorkerPool) { p.Concurrent = model.MaxConcurrent + 1 }},
			{"max_instances", store.Invalid, func(p *model.WorkerPool) { p.MaxInstances = 0 }},
			{"min_idle", store.Invalid, func(p *model.WorkerPool) { p.MinIdle = -1 }},
			{"min_idle", store.Invalid, func(p *model.WorkerPool) { p.MinIdle = 3 }},
			{"idle_timeout", store.Invalid, func(p *model.WorkerPool) { p.IdleTimeout = 0 }},
			{"startup_timeout", store.Invalid, func(p *model.WorkerPool) { p.StartupTimeout = -1 }},
			{"max_seconds_per_month", store.Invalid, func(p *model.WorkerPool) { p.MaxSecondsPerMonth = &neg }},
		} {
			p := validPool("fresh")
			c.edit(p)
			fieldError(t, f.s.WorkerPools().Create(ctx, p), c.field, c.kind)
		}
		pools, err := f.s.WorkerPools().List(ctx, store.Query{})
		must(t, err)
		if len(pools) != 1 {
			t.Fatalf("%d pools after refused creations", len(pools))
		}
		// concurrent left out is 1, as from a runner that does not say
		if pools[0].Concurrent != 1 {
			t.Fatalf("a pool created without concurrent runs %d at once", pools[0].Concurrent)
		}
		four := f.pool(t, "four", func(p *model.WorkerPool) { p.Concurrent = 4 })
		if got, err := f.s.WorkerPools().Get(ctx, four.ID, nil); err != nil || got.Concurrent != 4 {
			t.Fatalf("concurrent 4 reads back as %+v, %v", got, err)
		}
	})
}

// TestPoolInstanceLife follows instances from start to stop: slots and
// their workers, tokens that work only while the instance lives, a
// retirement refused while the instance runs a task or just ran one, and
// runtime — stopped instances' recorded runtime plus live ones' age — in
// the pool, in the snapshot and in the month's budget.
func TestPoolInstanceLife(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		now := f.fakeClock()
		start := *now
		p := f.pool(t, "cloud", nil)

		a, secretA, err := f.s.StartPoolInstance(ctx, p.ID)
		must(t, err)
		b, _, err := f.s.StartPoolInstance(ctx, p.ID)
		must(t, err)
		if a.Slot != 1 || a.WorkerName != "cloud-1" || b.Slot != 2 || b.WorkerName != "cloud-2" || a.State != model.InstanceCreating {
			t.Fatalf("instances %+v and %+v", a, b)
		}
		if a.Name != "cloud-"+itoa(a.ID) {
			t.Fatalf("instance name %q", a.Name)
		}
		if _, _, err := f.s.StartPoolInstance(ctx, p.ID); !errors.Is(err, store.ErrPoolFull) {
			t.Fatalf("a third instance of a pool of 2: %v", err)
		}
		principal, err := f.s.Authenticate(ctx, secretA)
		must(t, err)
		if principal.Worker == nil || principal.Worker.ID != a.WorkerID || !principal.Worker.Enabled ||
			principal.Worker.PoolID == nil || *principal.Worker.PoolID != p.ID {
			t.Fatalf("the instance's token speaks for %+v", principal.Worker)
		}

		// a connects and takes a task: it cannot be retired until it is
		// done and has been idle long enough
		*now = now.Add(10 * time.Second)
		_, _, err = f.s.ConnectWorker(ctx, a.WorkerID, model.WorkerMetadata{Architectures: []string{"amd64"}, Backends: []string{"unshare"}})
		must(t, err)
		must(t, f.s.PoolInstanceConnected(ctx, a.ID, *now))
		wr := f.worker(t, "amd64")
		claimed, err := f.s.ClaimWorkRequest(ctx, a.WorkerID)
		must(t, err)
		if claimed.ID != wr.ID {
			t.Fatalf("the instance claimed %d, want %d", claimed.ID, wr.ID)
		}
		view, err := f.s.PoolView(ctx)
		must(t, err)
		if len(view.Instances) != 2 || view.Instances[0].State != model.InstanceBusy || *view.Instances[0].CurrentWorkRequest != wr.ID ||
			view.Instances[1].State != model.InstanceCreating {
			t.Fatalf("live instances %+v", view.Instances)
		}
		if ok, err := f.s.RetirePoolInstance(ctx, a.ID, "idle_timeout", 0); err != nil || ok {
			t.Fatalf("retired an instance running a task: %v %v", ok, err)
		}
		*now = now.Add(10 * time.Second)
		_, err = f.s.CompleteWorkRequest(ctx, wr.ID, a.WorkerID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		*now = now.Add(5 * time.Second)
		if ok, err := f.s.RetirePoolInstance(ctx, a.ID, "idle_timeout", 10*time.Second); err != nil || ok {
			t.Fatalf("retired an instance idle for 5 s of 10: %v %v", ok, err)
		}
		*now = now.Add(5*time.Second + time.Microsecond)
		if ok, err := f.s.RetirePoolInstance(ctx, a.ID, "idle_timeout", 10*time.Second); err != nil || !ok {
			t.Fatalf("did not retire an instance idle for 10 s: %v %v", ok, err)
		}
		// stopping: no new work for it
		f.worker(t, "amd64")
		if _, err := f.s.ClaimWorkRequest(ctx, a.WorkerID); err == nil {
			t.Fatal("a stopping instance claimed work")
		}
		stopA := *now
		must(t, f.s.StopPoolInstance(ctx, a.ID, stopA, "idle_timeout"))
		must(t, f.s.StopPoolInstance(ctx, a.ID, now.Add(time.Hour), "again")) // no effect
		must(t, f.s.DisconnectWorker(ctx, a.WorkerID))                        // its runner is gone
		if _, err := f.s.Authenticate(ctx, secretA); !errors.Is(err, store.ErrUnauthenticated) {
			t.Fatalf("the token of a stopped instance: %v", err)
		}

		// b is lost: it is closed when it was last seen
		*now = now.Add(20 * time.Second)
		must(t, f.s.TouchPoolInstances(ctx, map[int64]time.Time{b.ID: *now}))
		seenB := *now
		*now = now.Add(time.Hour)
		must(t, f.s.StopPoolInstance(ctx, b.ID, seenB, "lost"))

		// c is live at the snapshot, in slot 1 again
		c, _, err := f.s.StartPoolInstance(ctx, p.ID)
		must(t, err)
		if c.Slot != 1 || c.WorkerID != a.WorkerID {
			t.Fatalf("the new instance took slot %d (worker %d), want slot 1 (worker %d)", c.Slot, c.WorkerID, a.WorkerID)
		}
		*now = now.Add(30 * time.Second)

		want := stopA.Sub(start).Seconds() + seenB.Sub(start).Seconds() + 30
		snap, err := f.s.Snapshot(ctx)
		must(t, err)
		if got := snap.PoolRuntime[p.ID]; math.Abs(got-want) > 1e-6 || snap.PoolNames[p.ID] != "cloud" {
			t.Fatalf("snapshot runtime %v of %q, want %v", got, snap.PoolNames[p.ID], want)
		}
		got, err := f.s.WorkerPools().Get(ctx, p.ID, nil)
		must(t, err)
		if math.Abs(got.RuntimeSeconds-want) > 1e-6 || got.Status.Instances[model.InstanceCreating] != 1 || got.Status.Live() != 1 {
			t.Fatalf("pool %+v, want runtime %v and one creating instance", got, want)
		}
		if used := got.Status.BudgetUsedSeconds; start.After(store.MonthStart(*now)) && math.Abs(used-want) > 1e-6 {
			t.Fatalf("budget used %v, want %v", used, want)
		}
		all, err := f.s.PoolInstances(ctx, store.InstanceQuery{PoolID: p.ID, All: true})
		must(t, err)
		if len(all) != 3 || all[2].ID != c.ID || all[1].StopReason != "lost" || all[0].StopReason != "idle_timeout" ||
			all[0].State != model.InstanceStopped || math.Abs(all[1].RuntimeSeconds-seenB.Sub(start).Seconds()) > 1e-6 {
			t.Fatalf("instances %+v", all)
		}
		f.checkTotals(t)
	})
}

// TestMonthRuntimeCountsThisMonthOnly: the budget counts the part of each
// instance's runtime that falls in the current calendar month.
func TestMonthRuntimeCountsThisMonthOnly(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		now := f.fakeClock()
		*now = time.Date(2031, 3, 31, 23, 0, 0, 0, time.UTC)
		p := f.pool(t, "cloud", nil)
		old, _, err := f.s.StartPoolInstance(ctx, p.ID) // 23:00, stops 01:00 next month
		must(t, err)
		gone, _, err := f.s.StartPoolInstance(ctx, p.ID) // last month only
		must(t, err)
		*now = now.Add(30 * time.Minute)
		must(t, f.s.StopPoolInstance(ctx, gone.ID, *now, "idle_timeout"))
		*now = now.Add(90 * time.Minute) // 2031-04-01 01:00
		must(t, f.s.StopPoolInstance(ctx, old.ID, *now, "idle_timeout"))
		_, _, err = f.s.StartPoolInstance(ctx, p.ID) // live since 01:00
		must(t, err)
		*now = now.Add(15 * time.Minute)
		got, err := f.s.WorkerPools().Get(ctx, p.ID, nil)
		must(t, err)
		if want := (75 * time.Minute).Seconds(); got.Status.BudgetUsedSeconds != want {
			t.Fatalf("budget used %v s, want %v s", got.Status.BudgetUsedSeconds, want)
		}
		if want := (2*time.Hour + 30*time.Minute + 15*time.Minute).Seconds(); got.RuntimeSeconds != want {
			t.Fatalf("runtime %v s, want %v s", got.RuntimeSeconds, want)
		}
	})
}

// TestRemoveWorkerPoolDrainsFirst: a pool with live instances is marked
// deleting (and refuses changes) until they are stopped; then it goes,
// with its workers — those that ran work stay, out of the pool and
// disabled.
func TestRemoveWorkerPoolDrainsFirst(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		p := f.pool(t, "cloud", nil)
		a, _, err := f.s.StartPoolInstance(ctx, p.ID)
		must(t, err)
		b, _, err := f.s.StartPoolInstance(ctx, p.ID)
		must(t, err)
		_, _, err = f.s.ConnectWorker(ctx, a.WorkerID, model.WorkerMetadata{Architectures: []string{"amd64"}})
		must(t, err)
		wr := f.worker(t, "amd64")
		_, err = f.s.ClaimWorkRequest(ctx, a.WorkerID)
		must(t, err)
		_, err = f.s.CompleteWorkRequest(ctx, wr.ID, a.WorkerID, store.Completion{Result: model.ResultSuccess})
		must(t, err)

		fieldError(t, f.s.WorkerPools().Delete(ctx, p.ID, nil), "", store.Conflict)
		marked, err := f.s.RemoveWorkerPool(ctx, p.ID, nil)
		must(t, err)
		if marked == nil || !marked.Status.Deleting || marked.Enabled {
			t.Fatalf("pool after removal with live instances: %+v", marked)
		}
		_, err = f.s.WorkerPools().Update(ctx, p.ID, nil, func(p *model.WorkerPool) error { p.MaxInstances = 5; return nil })
		fieldError(t, err, "", store.Conflict)
		if _, _, err := f.s.StartPoolInstance(ctx, p.ID); !errors.Is(err, store.ErrPoolFull) {
			t.Fatalf("a pool being deleted started an instance: %v", err)
		}
		if gone, err := f.s.FinishPoolDeletion(ctx, p.ID); err != nil || gone {
			t.Fatalf("deleted with live instances: %v %v", gone, err)
		}
		for _, i := range []*model.PoolInstance{a, b} {
			must(t, f.s.StopPoolInstance(ctx, i.ID, time.Now(), "drain"))
		}
		if gone, err := f.s.FinishPoolDeletion(ctx, p.ID); err != nil || !gone {
			t.Fatalf("not deleted once drained: %v %v", gone, err)
		}
		if _, err := f.s.WorkerPools().Get(ctx, p.ID, nil); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("the pool is still there: %v", err)
		}
		ran, err := f.s.Workers().Get(ctx, a.WorkerID, nil)
		must(t, err)
		if ran.PoolID != nil || ran.Enabled {
			t.Fatalf("the worker that ran work: %+v", ran)
		}
		if _, err := f.s.Workers().Get(ctx, b.WorkerID, nil); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("the worker that ran nothing is still there: %v", err)
		}
		// without live instances, removal deletes at once
		q := f.pool(t, "quiet", nil)
		if marked, err := f.s.RemoveWorkerPool(ctx, q.ID, nil); err != nil || marked != nil {
			t.Fatalf("removing an idle pool: %+v %v", marked, err)
		}
		f.checkTotals(t)
	})
}

// TestPendingWorkerRequestsCountsUpToTheLimit: the backlog of one
// (architecture, backend) is counted up to a limit, blocked and running
// requests and other keys aside.
func TestPendingWorkerRequestsCountsUpToTheLimit(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		for range 4 {
			f.worker(t, "riscv64")
		}
		dep := f.worker(t, "riscv64")
		f.worker(t, "riscv64", dep.ID) // blocked
		f.worker(t, "s390x")
		for _, c := range []struct {
			arch, backend string
			limit, want   int
		}{
			{"riscv64", "auto", 100, 5}, {"riscv64", "auto", 3, 3}, {"riscv64", "unshare", 100, 0},
			{"s390x", "auto", 100, 1}, {"it's", "auto", 10, 0},
		} {
			n, err := f.s.PendingWorkerRequests(ctx, c.arch, c.backend, c.limit)
			must(t, err)
			if n != c.want {
				t.Errorf("PendingWorkerRequests(%s, %s, %d) = %d, want %d", c.arch, c.backend, c.limit, n, c.want)
			}
		}
	})
}

// TestSessionLockIsOneHolderAtATime: while one process holds the lock the
// others cannot take it; when its connection dies it loses the lock, says
// so, and the next taker gets it.
func TestSessionLockIsOneHolderAtATime(t *testing.T) {
	ctx := context.Background()
	dsn := testdb.Postgres(t)
	one, two := open(t, dsn), open(t, dsn)
	defer one.Close()
	l, err := one.SessionLock(ctx, 77)
	must(t, err)
	must(t, l.Held(ctx))
	if _, err := two.SessionLock(ctx, 77); !errors.Is(err, store.ErrLockHeld) {
		t.Fatalf("a second holder: %v", err)
	}
	other, err := two.SessionLock(ctx, 78)
	must(t, err)
	other.Release()
	// the holder's connection dies (as when its process is killed)
	if _, err := two.DB().ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND objid = 77 AND granted`); err != nil {
		t.Fatal(err)
	}
	if err := l.Held(ctx); err == nil {
		t.Fatal("the lock of a closed connection is still held")
	}
	var taken store.Lock
	deadline := time.Now().Add(10 * time.Second)
	for taken == nil {
		taken, err = two.SessionLock(ctx, 77)
		if err != nil && (!errors.Is(err, store.ErrLockHeld) || time.Now().After(deadline)) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	must(t, taken.Held(ctx))
	taken.Release()
}

// TestFarmPoolsAndLastStopped: what the dashboard reads — Farm's pools,
// by name, with their status (live instances by state, runtime, budget
// used), and a pool's last stopped instances, the last stopped first.
func TestFarmPoolsAndLastStopped(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		now := f.fakeClock()
		start := *now
		p := f.pool(t, "zeta", func(p *model.WorkerPool) { p.MaxInstances = 4 })
		f.pool(t, "alpha", nil)
		var ids []int64
		for range 4 {
			inst, _, err := f.s.StartPoolInstance(ctx, p.ID)
			must(t, err)
			ids = append(ids, inst.ID)
		}
		// the first three stop a minute apart, in the order 2, 0, 1
		for _, i := range []int{2, 0, 1} {
			*now = now.Add(time.Minute)
			must(t, f.s.StopPoolInstance(ctx, ids[i], *now, "idle_timeout"))
		}
		last, err := f.s.PoolInstances(ctx, store.InstanceQuery{PoolID: p.ID, Stopped: true, Limit: 2})
		must(t, err)
		if len(last) != 2 || last[0].ID != ids[1] || last[1].ID != ids[0] || last[0].RuntimeSeconds != 180 {
			t.Fatalf("the last two stopped: %+v", last)
		}
		farm, err := f.s.Farm(ctx)
		must(t, err)
		if len(farm.Pools) != 2 || farm.Pools[0].Name != "alpha" || farm.Pools[1].Name != "zeta" {
			t.Fatalf("Farm's pools: %+v", farm.Pools)
		}
		z := farm.Pools[1]
		// 1 + 2 + 3 minutes stopped, and the live one 3 minutes old
		if z.Status.Instances[model.InstanceCreating] != 1 || z.Status.Live() != 1 || z.RuntimeSeconds != 540 {
			t.Fatalf("pool zeta's status %+v, runtime %v", z.Status, z.RuntimeSeconds)
		}
		if month := store.MonthStart(*now); !month.After(start) && z.Status.BudgetUsedSeconds != 540 {
			t.Fatalf("pool zeta used %v s this month, want 540", z.Status.BudgetUsedSeconds)
		}
	})
}
