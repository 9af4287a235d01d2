package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/pool"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// These tests drive the autoscaler against a real database with a
// provider of their own (cloud): each instance it creates is a little
// runner in a goroutine that connects as the instance's worker through
// the store, claims work and completes it, as `kiln runner` does over the
// protocol. The providers kiln ships are tested with real processes in
// process_test.go and exec_test.go, and the whole with real servers and
// runners in internal/cli.

// cloud is a provider whose instances are goroutines.
type cloud struct {
	st   store.Store
	arch string
	// fail, when set, makes create fail; silent instances never connect.
	fail   func() error
	silent bool

	mu        sync.Mutex
	instances map[string]context.CancelFunc
	created   []string
	destroyed []string
	extra     []pool.Listed // listed although kiln never created them
	peak      int           // most requests one instance held at once
}

func (c *cloud) Create(_ context.Context, req pool.CreateRequest) (pool.Created, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.created = append(c.created, req.Instance.Name)
	if c.fail != nil {
		if err := c.fail(); err != nil {
			return pool.Created{}, &pool.CallError{Op: "create", Err: err, Stderr: "quota exceeded"}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.instances[req.Instance.Name] = cancel
	if !c.silent {
		go c.run(ctx, req)
	}
	return pool.Created{ProviderID: "vm-" + req.Instance.Name}, nil
}

// run is the runner of one instance: connect with the pool's
// concurrent, then claim as much work as that allows and complete it,
// until the instance is destroyed.
func (c *cloud) run(ctx context.Context, req pool.CreateRequest) {
	w, err := c.st.Workers().Lookup(ctx, req.Instance.Worker, nil)
	if err != nil {
		return
	}
	if _, _, err := c.st.ConnectWorker(ctx, w.ID, model.WorkerMetadata{Architectures: []string{c.arch}, HostArchitecture: c.arch,
		Concurrent: req.Pool.Concurrent}); err != nil {
		return
	}
	defer c.st.DisconnectWorker(context.Background(), w.ID)
	for ctx.Err() == nil {
		c.st.TouchWorker(ctx, w.ID)
		var held []int64
		for range max(req.Pool.Concurrent, 1) {
			wr, err := c.st.ClaimWorkRequest(ctx, w.ID)
			if err != nil {
				break
			}
			held = append(held, wr.ID)
		}
		if len(held) > 0 {
			c.mu.Lock()
			c.peak = max(c.peak, len(held))
			c.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			for _, id := range held {
				c.st.CompleteWorkRequest(ctx, id, w.ID, store.Completion{Result: model.ResultSuccess})
			}
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (c *cloud) Destroy(_ context.Context, _ *model.WorkerPool, inst pool.Instance) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.destroyed = append(c.destroyed, inst.Name)
	if cancel, ok := c.instances[inst.Name]; ok {
		cancel()
		delete(c.instances, inst.Name)
	}
	for i, l := range c.extra {
		if l.Name == inst.Name {
			c.extra = append(c.extra[:i], c.extra[i+1:]...)
			break
		}
	}
	return nil
}

func (c *cloud) List(context.Context, *model.WorkerPool) ([]pool.Listed, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := append([]pool.Listed{}, c.extra...)
	for name := range c.instances {
		out = append(out, pool.Listed{Name: name})
	}
	return out, nil
}

func (c *cloud) counts() (created, destroyed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.created), len(c.destroyed)
}

// env is a farm with one pool of a cloud provider.
type env struct {
	t     *testing.T
	st    *store.SQL
	ws    int64
	pool  *model.WorkerPool
	cloud *cloud
	reg   *prometheus.Registry
	stop  func()
}

func newEnv(t *testing.T, dsn string, edit func(*model.WorkerPool)) *env {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Bootstrap(ctx, "kiln_admin_secret_0123", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	sc := &model.Scope{Name: "debian"}
	must(t, st.Scopes().Create(ctx, sc))
	ws := &model.Workspace{Name: "main", ScopeID: sc.ID, Public: true}
	must(t, st.Workspaces().Create(ctx, ws))
	p := &model.WorkerPool{Name: "cloud", Provider: "test", Enabled: true, Architectures: []string{"riscv64"},
		MaxInstances: 2, IdleTimeout: model.Duration(300 * time.Millisecond), StartupTimeout: model.Duration(5 * time.Second)}
	if edit != nil {
		edit(p)
	}
	p.Provider = model.ProviderExec // a provider the store knows; the test maps it to the cloud
	must(t, st.WorkerPools().Create(ctx, p))
	return &env{t: t, st: st, ws: ws.ID, pool: p, cloud: &cloud{st: st, arch: "riscv64", instances: map[string]context.CancelFunc{}},
		reg: prometheus.NewPedanticRegistry()}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// start runs an autoscaler until the test ends (or e.stop).
func (e *env) start(cfg pool.Config) *pool.Autoscaler {
	e.t.Helper()
	cfg.Providers = map[string]pool.Provider{model.ProviderExec: e.cloud}
	if cfg.Interval == 0 {
		cfg.Interval = 20 * time.Millisecond
	}
	cfg.Registerer = e.reg
	a, err := pool.New(e.st, cfg)
	must(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	e.stop = func() { cancel(); <-done }
	e.t.Cleanup(e.stop)
	return a
}

func (e *env) submit(n int, arch string) []int64 {
	e.t.Helper()
	var ids []int64
	for range n {
		wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: e.ws, MaxRetries: 1,
			Data: json.RawMessage(`{"host_architecture": "` + arch + `"}`)}
		must(e.t, e.st.SubmitWorkRequest(context.Background(), wr))
		ids = append(ids, wr.ID)
	}
	return ids
}

func (e *env) until(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			p, _ := e.st.WorkerPools().Get(context.Background(), e.pool.ID, nil)
			e.t.Fatalf("timed out waiting for %s; pool status %+v", what, p.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) completed(ids []int64) bool {
	for _, id := range ids {
		wr, err := e.st.WorkRequests().Get(context.Background(), id, nil)
		if err != nil || wr.Status != model.StatusCompleted {
			return false
		}
	}
	return true
}

func (e *env) poolNow() *model.WorkerPool {
	p, err := e.st.WorkerPools().Get(context.Background(), e.pool.ID, nil)
	must(e.t, err)
	return p
}

func (e *env) metric(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	must(e.t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return -1
}

// TestScaleUpFollowsTheBacklogWithinMaxInstances: six pending requests
// for a pool of two start exactly two instances, which run all six and
// stop once idle past idle_timeout; the runtime the pool reports is what
// the instances ran. A request for an architecture no pool offers starts
// nothing.
func TestScaleUpFollowsTheBacklogWithinMaxInstances(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn, nil)
		stranded := e.submit(1, "s390x")
		ids := e.submit(6, "riscv64")
		e.start(pool.Config{})
		e.until("all six requests to complete", func() bool { return e.completed(ids) })
		e.until("both instances to stop after idle_timeout", func() bool {
			_, destroyed := e.cloud.counts()
			return destroyed == 2 && e.poolNow().Status.Live() == 0
		})
		time.Sleep(100 * time.Millisecond) // a few more passes: nothing more starts
		if created, _ := e.cloud.counts(); created != 2 {
			t.Fatalf("%d instances created for 6 requests and max_instances 2", created)
		}
		if wr, _ := e.st.WorkRequests().Get(context.Background(), stranded[0], nil); wr.Status != model.StatusPending {
			t.Fatalf("the s390x request is %s", wr.Status)
		}
		all, err := e.st.PoolInstances(context.Background(), store.InstanceQuery{PoolID: e.pool.ID, All: true})
		must(t, err)
		var recorded float64
		for _, inst := range all {
			if inst.StopReason != pool.ReasonIdleTimeout || inst.ConnectedAt == nil {
				t.Errorf("instance %+v", inst)
			}
			recorded += inst.StoppedAt.Sub(inst.CreatedAt).Seconds()
		}
		snap, err := e.st.Snapshot(context.Background())
		must(t, err)
		if got := snap.PoolRuntime[e.pool.ID]; math.Abs(got-recorded) > 1e-6 {
			t.Fatalf("worker_pool_runtime %v, recorded %v", got, recorded)
		}
		for name, want := range map[string]float64{
			"kiln_pool_instance_creations_total":           2,
			"kiln_pool_instance_destructions_total":        2,
			"kiln_pool_instance_creation_duration_seconds": 2,
		} {
			res := "success"
			if name == "kiln_pool_instance_creation_duration_seconds" {
				res = ""
			}
			labels := []string{"worker_pool", "cloud"}
			if res != "" {
				labels = append(labels, "result", res)
			}
			if got := e.metric(name, labels...); got != want {
				t.Errorf("%s = %v, want %v", name, got, want)
			}
		}
		if got := e.metric("kiln_pool_scale_decisions_total", "worker_pool", "cloud", "direction", "up", "reason", "backlog"); got != 2 {
			t.Errorf("up decisions for the backlog: %v", got)
		}
		if got := e.metric("kiln_pool_scale_decisions_total", "worker_pool", "cloud", "direction", "down", "reason", "idle_timeout"); got != 2 {
			t.Errorf("down decisions for idle_timeout: %v", got)
		}
		if got := e.metric("kiln_pool_autoscaler_leader"); got != 1 {
			t.Errorf("leader gauge %v", got)
		}
		if problems, err := testutil.GatherAndLint(e.reg); err != nil || len(problems) > 0 {
			t.Errorf("lint: %v %v", problems, err)
		}
	})
}

// TestScaleUpCountsConcurrentInstances: instances that run three requests
// at once each take three of the backlog, so six pending requests start
// two instances of a pool that could have four, and each runs three at
// a time.
func TestScaleUpCountsConcurrentInstances(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn, func(p *model.WorkerPool) { p.Concurrent, p.MaxInstances = 3, 4 })
		ids := e.submit(6, "riscv64")
		e.start(pool.Config{})
		e.until("all six requests to complete", func() bool { return e.completed(ids) })
		if created, _ := e.cloud.counts(); created != 2 {
			t.Fatalf("%d instances created for 6 requests of instances that run 3 at once", created)
		}
		e.cloud.mu.Lock()
		peak := e.cloud.peak
		e.cloud.mu.Unlock()
		if peak < 2 {
			t.Errorf("no instance ran more than %d request at once", peak)
		}
	})
}

// TestMinIdleKeepsInstancesReady: min_idle instances start with no work
// and outlive idle_timeout.
func TestMinIdleKeepsInstancesReady(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn, func(p *model.WorkerPool) { p.MinIdle = 1; p.IdleTimeout = model.Duration(50 * time.Millisecond) })
		e.start(pool.Config{})
		e.until("an idle instance", func() bool { return e.poolNow().Status.Instances[model.InstanceIdle] == 1 })
		time.Sleep(300 * time.Millisecond)
		if created, destroyed := e.cloud.counts(); created != 1 || destroyed != 0 {
			t.Fatalf("created %d, destroyed %d; want one instance kept", created, destroyed)
		}
		if d := e.poolNow().Status.LastDecision; !strings.Contains(d, "min_idle") {
			t.Errorf("last decision %q", d)
		}
	})
}

// TestBudgetHoldsScaleUp: a pool whose month's budget cannot pay for one
// more instance starts none, and says why.
func TestBudgetHoldsScaleUp(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		budget := int64(1)
		e := newEnv(t, dsn, func(p *model.WorkerPool) {
			p.MaxSecondsPerMonth = &budget
			p.IdleTimeout = model.Duration(2 * time.Second)
		})
		e.submit(3, "riscv64")
		e.start(pool.Config{})
		e.until("the decision to say budget", func() bool {
			return strings.HasPrefix(e.poolNow().Status.LastDecision, "hold: budget: 0 s of max_seconds_per_month 1 s")
		})
		if created, _ := e.cloud.counts(); created != 0 {
			t.Fatalf("%d instances created beyond the budget", created)
		}
		if got := e.metric("kiln_pool_scale_decisions_total", "worker_pool", "cloud", "direction", "hold", "reason", "budget"); got < 1 {
			t.Errorf("hold decisions for the budget: %v", got)
		}
		if got := e.metric("kiln_pool_budget_seconds", "worker_pool", "cloud"); got != 1 {
			t.Errorf("kiln_pool_budget_seconds %v", got)
		}
	})
}

// TestBudgetStopsScaleUpAtTheLimit: a pool that used most of its month's
// budget may start one more instance — the runtime used, plus what its
// live instances run at least, plus one idle_timeout must fit — and no
// second one however long the backlog stays, and says why.
func TestBudgetStopsScaleUpAtTheLimit(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		e := newEnv(t, dsn, func(p *model.WorkerPool) {
			p.MaxInstances = 3
			p.IdleTimeout = model.Duration(10 * time.Second)
		})
		// an hour of runtime earlier (less if this month began since)
		past := time.Now().Add(-2 * time.Hour)
		e.st.SetClock(func() time.Time { return past })
		old, _, err := e.st.StartPoolInstance(ctx, e.pool.ID)
		must(t, err)
		e.st.SetClock(func() time.Time { return past.Add(time.Hour) })
		must(t, e.st.StopPoolInstance(ctx, old.ID, past.Add(time.Hour), pool.ReasonIdleTimeout))
		e.st.SetClock(time.Now)
		used := int64(e.poolNow().Status.BudgetUsedSeconds)
		// room for one instance's idle_timeout (10 s), not for two
		budget := used + 15
		_, err = e.st.WorkerPools().Update(ctx, e.pool.ID, nil, func(p *model.WorkerPool) error {
			p.MaxSecondsPerMonth = &budget
			return nil
		})
		must(t, err)

		ids := e.submit(6, "riscv64")
		e.start(pool.Config{})
		e.until("the one instance to run the six requests", func() bool { return e.completed(ids) })
		if created, _ := e.cloud.counts(); created != 1 {
			t.Fatalf("%d instances created with room in the budget for one", created)
		}
		want := fmt.Sprintf("hold: budget: %d s of max_seconds_per_month %d s used this month and 10 s more that its instances run at least; one more instance runs at least idle_timeout 10s",
			used, budget)
		if got := e.poolNow().Status.LastDecision; got != want {
			t.Errorf("last decision %q, want %q", got, want)
		}
		if got := e.metric("kiln_pool_scale_decisions_total", "worker_pool", "cloud", "direction", "hold", "reason", "budget"); got < 1 {
			t.Errorf("hold decisions for the budget: %v", got)
		}
	})
}

// TestFailingProviderBacksOff: a provider whose create fails is reported
// on the pool and the instance, and after the second failure in a row the
// pool backs off instead of calling it at every pass; once it works again
// the failures are forgotten.
func TestFailingProviderBacksOff(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn, nil)
		var mu sync.Mutex
		broken := true
		e.cloud.fail = func() error {
			mu.Lock()
			defer mu.Unlock()
			if broken {
				return errors.New("the cloud refused")
			}
			return nil
		}
		ids := e.submit(1, "riscv64")
		e.start(pool.Config{BackoffInitial: 300 * time.Millisecond, BackoffMax: time.Second})
		e.until("the pool to back off", func() bool { p := e.poolNow(); return p.Status.BackoffUntil != nil && p.Status.Failures >= 2 })
		p := e.poolNow()
		if !strings.Contains(p.Status.LastError, "the cloud refused") || !strings.Contains(p.Status.LastError, "quota exceeded") {
			t.Errorf("last error %q", p.Status.LastError)
		}
		created, _ := e.cloud.counts()
		time.Sleep(150 * time.Millisecond) // 7 passes, within the backoff
		if again, _ := e.cloud.counts(); again > created+1 {
			t.Errorf("%d creates while backing off", again-created)
		}
		all, err := e.st.PoolInstances(context.Background(), store.InstanceQuery{PoolID: e.pool.ID, All: true})
		must(t, err)
		if len(all) == 0 || !strings.Contains(all[0].Error, "the cloud refused") || all[0].Stderr != "quota exceeded" ||
			all[0].StopReason != pool.ReasonCreateFailed {
			t.Errorf("the failed instance: %+v", all)
		}
		mu.Lock()
		broken = false
		mu.Unlock()
		e.until("the request to run once the cloud works", func() bool { return e.completed(ids) })
		e.until("the failures to be forgotten", func() bool { p := e.poolNow(); return p.Status.Failures == 0 && p.Status.BackoffUntil == nil })
		if got := e.metric("kiln_pool_instance_creations_total", "worker_pool", "cloud", "result", "error"); got < 2 {
			t.Errorf("failed creations %v", got)
		}
	})
}

// TestStartupTimeoutGivesUp: an instance whose runner never connects is
// destroyed after startup_timeout and counted as a failure.
func TestStartupTimeoutGivesUp(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn, func(p *model.WorkerPool) {
			p.StartupTimeout = model.Duration(200 * time.Millisecond)
			p.MaxInstances = 1
		})
		e.cloud.silent = true
		e.submit(1, "riscv64")
		e.start(pool.Config{BackoffInitial: time.Hour})
		e.until("the silent instance to be given up", func() bool { _, d := e.cloud.counts(); return d >= 1 })
		e.until("its stop to be recorded", func() bool { return e.poolNow().Status.Live() <= 1 && e.poolNow().Status.Failures >= 1 })
		all, err := e.st.PoolInstances(context.Background(), store.InstanceQuery{PoolID: e.pool.ID, All: true})
		must(t, err)
		last := all[0]
		if last.StopReason != pool.ReasonStartupTimeout {
			t.Errorf("the first instance: %+v", last)
		}
		if !strings.Contains(e.poolNow().Status.LastError, "did not connect within startup_timeout 200ms") {
			t.Errorf("last error %q", e.poolNow().Status.LastError)
		}
		if got := e.metric("kiln_pool_instance_creations_total", "worker_pool", "cloud", "result", "timeout"); got < 1 {
			t.Errorf("timed-out creations %v", got)
		}
	})
}

// TestReconcileAfterRestart: a server that starts acting adopts the live
// instances its provider still has, closes those it lost at the time they
// were last seen, and destroys the ones it does not know.
func TestReconcileAfterRestart(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		e := newEnv(t, dsn, func(p *model.WorkerPool) { p.MaxInstances = 3 })
		// what a server killed a while ago left
		kept, _, err := e.st.StartPoolInstance(ctx, e.pool.ID)
		must(t, err)
		lost, _, err := e.st.StartPoolInstance(ctx, e.pool.ID)
		must(t, err)
		seen := lost.CreatedAt.Add(20 * time.Millisecond)
		must(t, e.st.TouchPoolInstances(ctx, map[int64]time.Time{lost.ID: seen}))
		e.cloud.extra = []pool.Listed{{Name: kept.Name}, {Name: "cloud-999", ProviderID: "vm-leaked"}}
		time.Sleep(200 * time.Millisecond) // the server was down

		e.start(pool.Config{})
		e.until("the orphan to be destroyed and the lost instance closed", func() bool {
			_, d := e.cloud.counts()
			return d >= 1 && e.poolNow().Status.Live() == 1
		})
		all, err := e.st.PoolInstances(ctx, store.InstanceQuery{PoolID: e.pool.ID, All: true})
		must(t, err)
		for _, inst := range all {
			switch inst.ID {
			case kept.ID:
				if !inst.Live() {
					t.Errorf("the instance the provider has was not adopted: %+v", inst)
				}
			case lost.ID:
				if inst.StopReason != pool.ReasonLost || !inst.StoppedAt.Equal(seen) {
					t.Errorf("the lost instance: %+v, want stopped when last seen", inst)
				}
			}
		}
		e.cloud.mu.Lock()
		destroyed := fmt.Sprint(e.cloud.destroyed)
		e.cloud.mu.Unlock()
		if destroyed != "[cloud-999]" {
			t.Errorf("destroyed %s, want the orphan only", destroyed)
		}
	})
}
