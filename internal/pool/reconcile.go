package pool

import (
	"context"
	"fmt"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// Reconciling compares what kiln knows of a pool's instances with what its
// provider has, when a server starts acting as the autoscaler (after a
// restart, or when it takes over from a server that died) and every
// ListInterval after:
//
//   - a live instance the provider has is adopted: it stays, seen alive
//     when the list was asked for;
//   - a live instance the provider does not have is lost: its stop is
//     recorded at the time it was last seen alive, not now, so that a
//     crash does not bill the time nobody watched;
//   - an instance the provider has and kiln does not know as live is an
//     orphan (a create that kiln did not record, an instance kiln gave up
//     on): it is destroyed, so that none is leaked.
//
// Instances created after the list was asked for, and those with a
// provider call in flight, are left for the next time.

// reconcileDue starts the lists that are due.
func (a *Autoscaler) reconcileDue(ctx context.Context, v *store.PoolView, byPool map[int64][]*store.LiveInstance) {
	for i := range v.Pools {
		p := v.Pools[i]
		prov := a.provider(&p)
		if prov == nil {
			continue
		}
		ps := a.state(&p)
		a.mu.Lock()
		due := !ps.listing && (ps.lastList.IsZero() || time.Since(ps.lastList) >= a.cfg.ListInterval)
		if ps.reconciled && time.Now().Before(ps.backoffUntil) {
			due = false
		}
		if !due {
			a.mu.Unlock()
			continue
		}
		// asked before this pass starts instances: those it starts are
		// not in the list, and are left alone
		asked := time.Now()
		ps.listing, ps.lastList = true, asked
		a.mu.Unlock()
		a.goOp(0, "list", func(ctx context.Context) {
			defer func() {
				a.mu.Lock()
				ps.listing = false
				a.mu.Unlock()
			}()
			a.reconcile(ctx, &p, prov, asked)
		})
	}
}

// reconcile lists pool p's instances and settles the differences with
// what kiln knew at asked.
func (a *Autoscaler) reconcile(ctx context.Context, p *model.WorkerPool, prov Provider, asked time.Time) {
	cctx, cancel := context.WithTimeout(ctx, a.callTimeout(p))
	listed, err := prov.List(cctx, p)
	cancel()
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		a.m.reconciles.WithLabelValues(p.Name, "error").Inc()
		a.failed(ctx, p, err)
		return
	}
	live, err := a.st.PoolInstances(ctx, store.InstanceQuery{PoolID: p.ID, Limit: store.MaxPageSize})
	if err != nil {
		a.log.Warn("reconciling a pool", "worker_pool", p.Name, "error", err)
		return
	}
	a.m.reconciles.WithLabelValues(p.Name, "success").Inc()
	has := map[string]Listed{}
	for _, l := range listed {
		has[l.Name] = l
	}
	adopted := map[int64]time.Time{}
	known := map[string]bool{}
	for _, inst := range live {
		known[inst.Name] = true
		if inst.CreatedAt.After(asked) || a.busy(inst.ID, asked) {
			continue
		}
		if _, ok := has[inst.Name]; ok {
			adopted[inst.ID] = asked
			continue
		}
		if err := a.st.StopPoolInstance(ctx, inst.ID, inst.LastSeenAt, ReasonLost); err != nil {
			a.log.Warn("recording a lost instance's stop", "instance", inst.Name, "error", err)
			continue
		}
		a.m.decisions.WithLabelValues(p.Name, Down, ReasonLost).Inc()
		a.record(ctx, p, "down: "+ReasonLost, fmt.Sprintf("down: %s is gone from the provider (%s)", inst.Name, ReasonLost))
		a.log.Warn("pool instance lost: the provider no longer has it; its runtime ends when it was last seen",
			"worker_pool", p.Name, "instance", inst.Name, "last_seen", inst.LastSeenAt.Format(time.RFC3339Nano))
	}
	if err := a.st.TouchPoolInstances(ctx, adopted); err != nil {
		a.log.Warn("reconciling a pool", "worker_pool", p.Name, "error", err)
	}
	for _, l := range listed {
		if known[l.Name] {
			continue
		}
		a.m.decisions.WithLabelValues(p.Name, Down, ReasonOrphan).Inc()
		a.log.Warn("destroying an instance kiln does not know as live", "worker_pool", p.Name, "instance", l.Name,
			"provider_id", l.ProviderID)
		cctx, cancel := context.WithTimeout(ctx, a.callTimeout(p))
		err := prov.Destroy(cctx, p, Instance{Name: l.Name, ProviderID: l.ProviderID})
		cancel()
		if err != nil {
			a.m.destroys.WithLabelValues(p.Name, "error").Inc()
			a.failed(ctx, p, fmt.Errorf("orphan instance %s: %w", l.Name, err))
			continue
		}
		a.m.destroys.WithLabelValues(p.Name, "success").Inc()
	}
	ps := a.state(p)
	a.mu.Lock()
	first := !ps.reconciled
	ps.reconciled = true
	a.mu.Unlock()
	if first && len(adopted) > 0 {
		a.log.Info("adopted the pool instances the provider still has", "worker_pool", p.Name, "instances", len(adopted))
	}
}
