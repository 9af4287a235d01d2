package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// One pass of the acting autoscaler: read the pools, their live instances
// and the workers with room for work (store.PoolView) and the matching
// backlog, then decide, pool by pool:
//
//  1. instances whose runner connected are running (creation measured);
//     those whose runner did not connect within startup_timeout, or
//     stayed away that long, are destroyed; instances left stopping (a
//     failed destroy, another server's) are destroyed again;
//  2. pools being deleted or disabled are drained: each instance is
//     destroyed once it runs nothing; above max_instances, the idle extra
//     ones are; an instance idle longer than idle_timeout is, beyond the
//     min_idle that stay;
//  3. pending Worker requests that no worker with room (nor an instance on
//     its way) can take start instances of the pools that offer their
//     architecture and backend, one per `concurrent` requests (what each
//     instance's runner runs at once), never above max_instances, while
//     the pool's monthly budget allows one more (the month's runtime, what
//     its live instances run at least, and one idle_timeout) and the pool
//     does not back off; then pools with fewer than min_idle idle
//     instances start more;
//  4. instances known alive are touched (a lost instance's runtime ends
//     at its last sighting), deleted pools whose instances are all gone
//     go, and each provider's list is compared with what kiln knows every
//     ListInterval (adopting what it has, destroying what kiln lost).
//
// Provider calls run in goroutines of their own, one at a time per
// instance, so that a hung provider slows its own pool only.

// offerKey is one (architecture, backend) the backlog is counted by.
type offerKey struct{ arch, backend string }

// pass makes one round of decisions.
func (a *Autoscaler) pass(ctx context.Context) error {
	// a provider call that ends after this may not show in the view
	read := time.Now()
	v, err := a.st.PoolView(ctx)
	if err != nil {
		return err
	}
	now := v.Now
	pools := map[int64]*model.WorkerPool{}
	byPool := map[int64][]*store.LiveInstance{}
	for i := range v.Pools {
		p := &v.Pools[i]
		pools[p.ID] = p
		a.m.initPool(p.Name)
	}
	for i := range v.Instances {
		inst := &v.Instances[i]
		byPool[inst.PoolID] = append(byPool[inst.PoolID], inst)
	}
	a.reconcileDue(ctx, v, byPool)

	// when each instance was last known alive: its runner's last
	// heartbeat, or now for a host-bound provider's running child (a list
	// asked for and a create that succeeded count too: reconcile.go,
	// start); an instance from before this server acted waits for its
	// provider's list
	seen := map[int64]time.Time{}
	for _, p := range v.Pools {
		prov := a.provider(&p)
		if prov == nil {
			a.record(ctx, &p, "hold: provider", fmt.Sprintf("hold: provider %q is unknown to this server", p.Provider))
			continue
		}
		for _, inst := range byPool[p.ID] {
			if inst.WorkerConnectedAt != nil && inst.WorkerLastSeenAt != nil && a.ownsInstance(&p, inst) {
				seen[inst.ID] = *inst.WorkerLastSeenAt
			}
			a.maintain(ctx, &p, inst, now, read)
		}
		if hb, ok := prov.(HostBound); ok {
			listed, _ := hb.List(ctx, &p)
			for _, inst := range byPool[p.ID] {
				if slices.ContainsFunc(listed, func(l Listed) bool { return l.Name == inst.Name }) {
					seen[inst.ID] = now
				}
			}
		}
		a.scaleDown(ctx, &p, byPool[p.ID], now, read)
	}
	if err := a.scaleUp(ctx, v, pools, byPool, now); err != nil {
		return err
	}
	if err := a.st.TouchPoolInstances(ctx, seen); err != nil {
		return err
	}
	gauges := map[string]poolGauges{}
	for _, p := range v.Pools {
		g := poolGauges{instances: map[model.InstanceState]int{}, max: p.MaxInstances, used: p.Status.BudgetUsedSeconds,
			budget: p.MaxSecondsPerMonth}
		for _, inst := range byPool[p.ID] {
			g.instances[inst.State]++
		}
		gauges[p.Name] = g
		if p.Status.Deleting && len(byPool[p.ID]) == 0 {
			if gone, err := a.st.FinishPoolDeletion(ctx, p.ID); err != nil {
				a.log.Warn("deleting a drained pool", "worker_pool", p.Name, "error", err)
			} else if gone {
				a.log.Info("worker pool drained and deleted", "worker_pool", p.Name)
				delete(gauges, p.Name)
			}
		}
	}
	a.m.setState(gauges)
	return nil
}

// maintain follows one live instance, as the pass read it at read: its
// runner's connection, its timeouts, its idle time.
func (a *Autoscaler) maintain(ctx context.Context, p *model.WorkerPool, inst *store.LiveInstance, now, read time.Time) {
	if a.busy(inst.ID, read) {
		return
	}
	if !a.ownsInstance(p, inst) {
		return // from before this server acted: the provider's list decides first
	}
	startup := time.Duration(p.StartupTimeout)
	switch {
	case inst.State == model.InstanceStopping:
		if a.backingOff(p, now).IsZero() {
			a.destroy(p, inst, inst.StopReason)
		}
		return
	case inst.ConnectedAt == nil && inst.WorkerConnectedAt != nil && !inst.WorkerConnectedAt.Before(inst.CreatedAt):
		took := inst.WorkerConnectedAt.Sub(inst.CreatedAt)
		if err := a.st.PoolInstanceConnected(ctx, inst.ID, *inst.WorkerConnectedAt); err != nil {
			a.log.Warn("recording an instance's connection", "instance", inst.Name, "error", err)
			return
		}
		inst.ConnectedAt = inst.WorkerConnectedAt
		a.m.creations.WithLabelValues(p.Name, "success").Inc()
		a.m.createTime.WithLabelValues(p.Name).Observe(took.Seconds())
		a.log.Info("pool instance ready", "worker_pool", p.Name, "instance", inst.Name, "worker", inst.WorkerName,
			"took", took.Round(time.Millisecond).String())
		a.succeeded(ctx, p)
		a.checkOffer(p, inst)
	case inst.State == model.InstanceCreating && now.Sub(inst.CreatedAt) > startup:
		a.m.creations.WithLabelValues(p.Name, "timeout").Inc()
		a.failed(ctx, p, fmt.Errorf("instance %s: its runner did not connect within startup_timeout %s", inst.Name, startup))
		a.abandon(ctx, p, inst, ReasonStartupTimeout)
		return
	case inst.State == model.InstanceDisconnected:
		last := inst.CreatedAt
		for _, t := range []*time.Time{inst.ConnectedAt, inst.WorkerLastSeenAt} {
			if t != nil && t.After(last) {
				last = *t
			}
		}
		if now.Sub(last) > startup {
			a.failed(ctx, p, fmt.Errorf("instance %s: its runner has been away since %s, longer than startup_timeout %s",
				inst.Name, last.Format(time.RFC3339), startup))
			a.abandon(ctx, p, inst, ReasonDisconnected)
		}
		return
	}
	switch {
	case inst.State == model.InstanceIdle && inst.IdleSince == nil:
		if err := a.st.SetPoolInstanceIdle(ctx, inst.ID, &now); err == nil {
			inst.IdleSince = &now
		}
	case inst.State == model.InstanceBusy && inst.IdleSince != nil:
		if err := a.st.SetPoolInstanceIdle(ctx, inst.ID, nil); err == nil {
			inst.IdleSince = nil
		}
	}
}

// ownsInstance reports whether the acting autoscaler may act on inst: it
// started it, or the pool's instances were compared with the provider's
// list since this server acts.
func (a *Autoscaler) ownsInstance(p *model.WorkerPool, inst *store.LiveInstance) bool {
	ps := a.state(p)
	a.mu.Lock()
	defer a.mu.Unlock()
	return ps.reconciled || !inst.CreatedAt.Before(a.since)
}

// checkOffer warns once when an instance's runner offers less than its
// pool says: the requests it lacks would start instances that never take
// them.
func (a *Autoscaler) checkOffer(p *model.WorkerPool, inst *store.LiveInstance) {
	v, err := a.st.Workers().Get(context.Background(), inst.WorkerID, nil)
	if err != nil {
		return
	}
	var missing []string
	for _, arch := range p.Architectures {
		if !slices.Contains(v.Metadata.Architectures, arch) {
			missing = append(missing, "architecture "+arch)
		}
	}
	for _, b := range p.Backends {
		if !slices.Contains(v.Metadata.Backends, b) {
			missing = append(missing, "backend "+b)
		}
	}
	ps := a.state(p)
	a.mu.Lock()
	warn := len(missing) > 0 && !ps.warned[inst.ID]
	ps.warned[inst.ID] = true
	a.mu.Unlock()
	if warn {
		a.log.Warn("a pool instance's runner does not offer what its pool says; requests for it will keep starting instances",
			"worker_pool", p.Name, "instance", inst.Name, "lacks", strings.Join(missing, ", "))
	}
}

// scaleDown drains disabled and deleted pools, stops instances above
// max_instances and those idle past idle_timeout beyond min_idle.
func (a *Autoscaler) scaleDown(ctx context.Context, p *model.WorkerPool, insts []*store.LiveInstance, now, read time.Time) {
	var idle []*store.LiveInstance
	live := 0
	for _, inst := range insts {
		if inst.State == model.InstanceStopping || a.busy(inst.ID, read) || !a.ownsInstance(p, inst) {
			live++
			continue
		}
		switch {
		case p.Status.Deleting:
			a.retire(ctx, p, inst, ReasonDrain, 0)
		case !p.Enabled:
			a.retire(ctx, p, inst, ReasonDisabled, 0)
		default:
			live++
			if inst.State == model.InstanceIdle || inst.State == model.InstanceCreating {
				idle = append(idle, inst)
			}
		}
	}
	if !p.Enabled || p.Status.Deleting {
		return
	}
	// above a lowered max_instances: the newest idle ones go first
	slices.SortFunc(idle, func(x, y *store.LiveInstance) int { return cmp.Compare(y.ID, x.ID) })
	for len(idle) > 0 && live > p.MaxInstances {
		if a.retire(ctx, p, idle[0], ReasonMaxInstances, 0) {
			live--
		}
		idle = idle[1:]
	}
	// idle past idle_timeout, the longest idle first, keeping min_idle
	var ready []*store.LiveInstance
	for _, inst := range idle {
		if inst.State == model.InstanceIdle && inst.IdleSince != nil {
			ready = append(ready, inst)
		}
	}
	slices.SortFunc(ready, func(x, y *store.LiveInstance) int { return x.IdleSince.Compare(*y.IdleSince) })
	timeout := time.Duration(p.IdleTimeout)
	n := len(idle)
	for _, inst := range ready {
		if n <= p.MinIdle || now.Sub(*inst.IdleSince) < timeout {
			break
		}
		if a.retire(ctx, p, inst, ReasonIdleTimeout, timeout) {
			n--
		}
	}
}

// retire stops an instance that runs nothing (and, with idleFor, ran
// nothing that long): the store refuses one that got work meanwhile.
func (a *Autoscaler) retire(ctx context.Context, p *model.WorkerPool, inst *store.LiveInstance, reason string, idleFor time.Duration) bool {
	ok, err := a.st.RetirePoolInstance(ctx, inst.ID, reason, idleFor)
	if err != nil {
		a.log.Warn("retiring an instance", "instance", inst.Name, "error", err)
		return false
	}
	if !ok {
		return false
	}
	a.m.decisions.WithLabelValues(p.Name, Down, reason).Inc()
	a.record(ctx, p, "down: "+reason, fmt.Sprintf("down: stopping %s (%s)", inst.Name, reason))
	a.log.Info("stopping a pool instance", "worker_pool", p.Name, "instance", inst.Name, "reason", reason)
	a.destroy(p, inst, reason)
	return true
}

// abandon stops an instance whatever its runner was doing (it is gone).
func (a *Autoscaler) abandon(ctx context.Context, p *model.WorkerPool, inst *store.LiveInstance, reason string) {
	if err := a.st.AbandonPoolInstance(ctx, inst.ID, reason); err != nil {
		a.log.Warn("giving up an instance", "instance", inst.Name, "error", err)
		return
	}
	a.m.decisions.WithLabelValues(p.Name, Down, reason).Inc()
	a.record(ctx, p, "down: "+reason, fmt.Sprintf("down: giving up %s (%s)", inst.Name, reason))
	a.log.Warn("giving up a pool instance", "worker_pool", p.Name, "instance", inst.Name, "reason", reason)
	a.destroy(p, inst, reason)
}

// destroy asks the provider to destroy a stopping instance and records
// its stop; a failure leaves it stopping, to be destroyed again.
func (a *Autoscaler) destroy(p *model.WorkerPool, inst *store.LiveInstance, reason string) {
	pool, prov := *p, a.provider(p)
	in := InstanceOf(&inst.PoolInstance)
	a.goOp(inst.ID, "destroy", func(ctx context.Context) {
		cctx, cancel := context.WithTimeout(ctx, a.callTimeout(&pool))
		err := prov.Destroy(cctx, &pool, in)
		cancel()
		if ctx.Err() != nil {
			return // shutting down: the instance stays stopping
		}
		if err != nil {
			a.m.destroys.WithLabelValues(pool.Name, "error").Inc()
			a.instanceFailed(ctx, inst.ID, err)
			a.failed(ctx, &pool, fmt.Errorf("instance %s: %w", in.Name, err))
			return
		}
		a.m.destroys.WithLabelValues(pool.Name, "success").Inc()
		if err := a.st.StopPoolInstance(ctx, inst.ID, time.Now(), reason); err != nil {
			a.log.Warn("recording an instance's stop", "instance", in.Name, "error", err)
			return
		}
		a.log.Info("pool instance destroyed", "worker_pool", pool.Name, "instance", in.Name, "reason", reason,
			"runtime", time.Since(inst.CreatedAt).Round(time.Second).String())
	})
}

// instanceFailed records a provider's failure on the instance.
func (a *Autoscaler) instanceFailed(ctx context.Context, id int64, err error) {
	f := store.InstanceFailure{Error: err.Error()}
	var ce *CallError
	if errors.As(err, &ce) {
		f.ExitStatus, f.Stderr = ce.ExitStatus, ce.Stderr
	}
	if err := a.st.RecordPoolInstanceFailure(ctx, id, f); err != nil {
		a.log.Warn("recording an instance's failure", "error", err)
	}
}

// scaleUp starts instances for the backlog no worker can take, then for
// min_idle.
func (a *Autoscaler) scaleUp(ctx context.Context, v *store.PoolView, pools map[int64]*model.WorkerPool,
	byPool map[int64][]*store.LiveInstance, now time.Time) error {
	// the backlog of what startable pools offer, counted up to what they
	// could take plus what is about to take some
	var startable []*model.WorkerPool
	keys := map[offerKey]bool{}
	limit := 1
	for i := range v.Pools {
		p := &v.Pools[i]
		if !p.CanStart() || a.provider(p) == nil {
			continue
		}
		startable = append(startable, p)
		limit += p.MaxInstances * capacity(p)
		for _, arch := range p.Architectures {
			for _, b := range append([]string{model.BackendAuto}, p.Backends...) {
				keys[offerKey{arch, b}] = true
			}
		}
	}
	if len(startable) == 0 {
		return nil
	}
	for _, sw := range v.Spare {
		limit += sw.Spare
	}
	for i := range v.Instances {
		limit += capacity(pools[v.Instances[i].PoolID])
	}
	sorted := slices.SortedFunc(maps.Keys(keys), func(x, y offerKey) int {
		return cmp.Or(cmp.Compare(x.arch, y.arch), cmp.Compare(x.backend, y.backend))
	})
	backlog := map[offerKey]int{}
	total := map[offerKey]int{}
	for _, k := range sorted {
		n, err := a.st.PendingWorkerRequests(ctx, k.arch, k.backend, limit)
		if err != nil {
			return err
		}
		backlog[k], total[k] = n, n
	}
	// take reports whether a unit of room that o offers takes a request
	take := func(o model.Offer) bool {
		for _, k := range sorted {
			if backlog[k] > 0 && o.Runs(model.TaskWorker, k.arch, k.backend) {
				backlog[k]--
				return true
			}
		}
		return false
	}
	// workers with room take what they can, then instances on their way
	// (their pool's offer, as many tasks as the pool says each runs)
	ready := map[int64]int{} // pool → idle instances not taken by the backlog
	taken := map[int64]bool{}
	for _, sw := range v.Spare {
		for range sw.Spare {
			if take(sw.Offer) {
				taken[sw.WorkerID] = true
			}
		}
	}
	for i := range v.Instances {
		inst := &v.Instances[i]
		p := pools[inst.PoolID]
		switch inst.State {
		case model.InstanceIdle:
			if !taken[inst.WorkerID] {
				ready[p.ID]++
			}
		case model.InstanceCreating, model.InstanceDisconnected:
			took := false
			for range capacity(p) {
				if !take(p.Offer()) {
					break
				}
				took = true
			}
			if !took {
				ready[p.ID]++
			}
		}
	}
	started := map[int64]int{}
	held := map[int64]string{}
	// the rest of the backlog starts instances, pool by pool in id order
	for _, k := range sorted {
		for _, p := range startable {
			if backlog[k] == 0 {
				break
			}
			if !p.Offer().Runs(model.TaskWorker, k.arch, k.backend) {
				continue
			}
			for backlog[k] > 0 {
				if why := a.cannotStart(p, byPool[p.ID], started[p.ID], now); why != "" {
					if held[p.ID] == "" {
						held[p.ID] = why
					}
					break
				}
				if !a.start(ctx, p, ReasonBacklog) {
					break
				}
				started[p.ID]++
				// the new instance takes its share of the backlog: of
				// this key first, then of what else the pool offers
				n := min(backlog[k], capacity(p))
				backlog[k] -= n
				for range capacity(p) - n {
					take(p.Offer())
				}
				a.record(ctx, p, "up: "+ReasonBacklog, fmt.Sprintf("up: started instances for %d pending requests for %s (backend %s) that no idle worker can take",
					total[k], k.arch, k.backend))
			}
		}
	}
	// min_idle
	for _, p := range startable {
		for ready[p.ID] < p.MinIdle {
			if why := a.cannotStart(p, byPool[p.ID], started[p.ID], now); why != "" {
				if held[p.ID] == "" {
					held[p.ID] = why
				}
				break
			}
			if !a.start(ctx, p, ReasonMinIdle) {
				break
			}
			started[p.ID]++
			ready[p.ID]++
			a.record(ctx, p, "up: "+ReasonMinIdle, fmt.Sprintf("up: keeping min_idle %d idle instances", p.MinIdle))
		}
	}
	for _, p := range startable {
		why := held[p.ID]
		if why == "" {
			continue
		}
		reason, _, _ := strings.Cut(why, ":")
		a.m.decisions.WithLabelValues(p.Name, Hold, reason).Inc()
		a.record(ctx, p, "hold: "+reason, "hold: "+why)
	}
	return nil
}

// capacity is how many requests an instance of pool p runs at once, as
// far as the autoscaler can know before its runner says.
func capacity(p *model.WorkerPool) int { return max(p.Concurrent, 1) }

// cannotStart says why pool p may not start one more instance now (its
// live instances insts, started more this pass), as "reason: details";
// "" when it may.
func (a *Autoscaler) cannotStart(p *model.WorkerPool, insts []*store.LiveInstance, started int, now time.Time) string {
	if until := a.backingOff(p, now); !until.IsZero() {
		return fmt.Sprintf("%s: after %d provider failures in a row, until %s", ReasonBackoff, a.state(p).failures,
			until.UTC().Format(time.RFC3339))
	}
	if live := len(insts) + started; live >= p.MaxInstances {
		return fmt.Sprintf("%s: %d of %d instances live", ReasonMaxInstances, live, p.MaxInstances)
	}
	if b := p.MaxSecondsPerMonth; b != nil {
		least := time.Duration(p.IdleTimeout)
		committed := committedRuntime(p, insts, now) + least*time.Duration(started)
		if p.Status.BudgetUsedSeconds+committed.Seconds()+least.Seconds() > float64(*b) {
			more := ""
			if committed > 0 {
				more = fmt.Sprintf(" and %.0f s more that its instances run at least", committed.Seconds())
			}
			return fmt.Sprintf("%s: %.0f s of max_seconds_per_month %d s used this month%s; one more instance runs at least idle_timeout %s",
				ReasonBudget, p.Status.BudgetUsedSeconds, *b, more, least)
		}
	}
	return ""
}

// committedRuntime is the runtime pool p's live instances insts will
// still use at least, from now: an instance is stopped once it has been
// idle for idle_timeout, so one that is busy, starting or away runs at
// least that long again, an idle one the rest of it; one stopping, none.
// The budget counts it before an instance starts, or a pool would start
// one per pass while its instances' runtime has not caught up yet.
func committedRuntime(p *model.WorkerPool, insts []*store.LiveInstance, now time.Time) time.Duration {
	least := time.Duration(p.IdleTimeout)
	var out time.Duration
	for _, inst := range insts {
		switch {
		case inst.State == model.InstanceStopping:
		case inst.State == model.InstanceIdle && inst.IdleSince != nil:
			out += max(0, least-now.Sub(*inst.IdleSince))
		default:
			out += least
		}
	}
	return out
}

// start records a new instance of pool p and asks the provider for it.
func (a *Autoscaler) start(ctx context.Context, p *model.WorkerPool, reason string) bool {
	inst, secret, err := a.st.StartPoolInstance(ctx, p.ID)
	if err != nil {
		if !errors.Is(err, store.ErrPoolFull) {
			a.failed(ctx, p, fmt.Errorf("starting an instance: %w", err))
		}
		return false
	}
	a.m.decisions.WithLabelValues(p.Name, Up, reason).Inc()
	a.log.Info("starting a pool instance", "worker_pool", p.Name, "instance", inst.Name, "worker", inst.WorkerName, "reason", reason)
	pool, prov := *p, a.provider(p)
	req := CreateRequest{Pool: &pool, Instance: InstanceOf(inst), ServerURL: a.cfg.ServerURL, Token: secret}
	li := &store.LiveInstance{PoolInstance: *inst}
	a.goOp(inst.ID, "create", func(ctx context.Context) {
		cctx, cancel := context.WithTimeout(ctx, a.callTimeout(&pool))
		created, err := prov.Create(cctx, req)
		cancel()
		if ctx.Err() != nil && err != nil {
			return // shutting down: the next acting server reconciles it
		}
		if err != nil {
			a.m.creations.WithLabelValues(pool.Name, "error").Inc()
			a.instanceFailed(ctx, inst.ID, err)
			a.failed(ctx, &pool, fmt.Errorf("instance %s: %w", inst.Name, err))
			// whatever the provider made of it goes
			if err := a.st.AbandonPoolInstance(ctx, inst.ID, ReasonCreateFailed); err != nil {
				a.log.Warn("giving up an instance", "instance", inst.Name, "error", err)
			}
			a.m.decisions.WithLabelValues(pool.Name, Down, ReasonCreateFailed).Inc()
			cctx, cancel := context.WithTimeout(ctx, a.callTimeout(&pool))
			derr := prov.Destroy(cctx, &pool, req.Instance)
			cancel()
			if derr != nil {
				a.m.destroys.WithLabelValues(pool.Name, "error").Inc()
				return // stopping: destroyed again by a later pass
			}
			a.m.destroys.WithLabelValues(pool.Name, "success").Inc()
			if err := a.st.StopPoolInstance(ctx, inst.ID, time.Now(), ReasonCreateFailed); err != nil {
				a.log.Warn("recording an instance's stop", "instance", inst.Name, "error", err)
			}
			return
		}
		if err := a.st.PoolInstanceCreated(ctx, inst.ID, created.ProviderID); err != nil {
			a.log.Warn("recording an instance's creation", "instance", inst.Name, "error", err)
		}
		if err := a.st.TouchPoolInstances(ctx, map[int64]time.Time{inst.ID: time.Now()}); err != nil {
			a.log.Warn("recording an instance's creation", "instance", inst.Name, "error", err)
		}
		a.log.Info("pool instance created; waiting for its runner", "worker_pool", pool.Name, "instance", li.Name,
			"provider_id", created.ProviderID)
	})
	return true
}
