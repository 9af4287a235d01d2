package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// LockKey is the PostgreSQL advisory lock that the farm's one autoscaler
// holds (store.SessionLock), listed with every other key of kiln in
// package store.
const LockKey = store.AutoscalerLockKey

// Defaults of Config.
const (
	DefaultInterval       = 2 * time.Second
	DefaultListInterval   = time.Minute
	DefaultBackoffInitial = 10 * time.Second
	DefaultBackoffMax     = 10 * time.Minute
	DefaultStopTimeout    = 30 * time.Second
)

// Config is how an autoscaler runs.
type Config struct {
	// Providers by name (model.ProviderProcess, model.ProviderExec); a
	// pool whose provider is missing is reported and left alone.
	Providers map[string]Provider
	// ServerURL is where instances' runners connect, unless a pool's
	// settings say otherwise.
	ServerURL string
	// Interval is how often the autoscaler looks at the pools and the
	// queue; default DefaultInterval. Replicas that do not hold the lock
	// try to take it as often.
	Interval time.Duration
	// ListInterval is how often each pool's instances are compared with
	// its provider's list (they always are when this server starts
	// acting); default DefaultListInterval.
	ListInterval time.Duration
	// BackoffInitial and BackoffMax bound the wait of a pool whose
	// provider failed twice or more in a row (exponential, ±20 % jitter);
	// defaults DefaultBackoffInitial and DefaultBackoffMax.
	BackoffInitial, BackoffMax time.Duration
	// StopTimeout bounds the stop of a process instance (its task is
	// handed back); default DefaultStopTimeout.
	StopTimeout time.Duration
	// Logger hears of every decision and failure; nil discards.
	Logger *slog.Logger
	// Registerer, when set, receives the autoscaler's metrics.
	Registerer prometheus.Registerer
}

// Autoscaler starts and stops the instances of every worker pool of the
// farm. Every server runs one; the one that holds the lock acts.
type Autoscaler struct {
	st  store.Store
	cfg Config
	log *slog.Logger
	m   *metrics

	mu  sync.Mutex
	ops map[int64]string // instance id → the provider call in flight
	// settled is when the last provider call about each instance ended,
	// with what it recorded: what was read of the instance before then
	// may not show its outcome (busy); entries go after a while
	settled map[int64]time.Time
	pools   map[int64]*poolState // by pool id, while acting
	wg      sync.WaitGroup       // provider calls in flight
	since   time.Time            // when this server started acting
	opCtx   context.Context      // provider calls; cancelled when acting ends
}

// poolState is what the acting autoscaler keeps about a pool between
// passes.
type poolState struct {
	b            *backoff.ExponentialBackOff
	failures     int
	backoffUntil time.Time
	// reconciled: the pool's instances from before this server acted
	// have been compared with the provider's list; until then they are
	// left alone (their runtime ends when the list says).
	reconciled bool
	listing    bool
	lastList   time.Time
	// decided and decidedAt are the last decision recorded on the pool.
	decided   string
	decidedAt time.Time
	warned    map[int64]bool // instances whose runner offers less than the pool
}

// New makes an autoscaler over st.
func New(st store.Store, cfg Config) (*Autoscaler, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.ListInterval <= 0 {
		cfg.ListInterval = DefaultListInterval
	}
	if cfg.BackoffInitial <= 0 {
		cfg.BackoffInitial = DefaultBackoffInitial
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	a := &Autoscaler{st: st, cfg: cfg, log: cfg.Logger, ops: map[int64]string{}, settled: map[int64]time.Time{}}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if a.m, err = newMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("autoscaler metrics: %w", err)
	}
	return a, nil
}

// Run takes part in the farm until ctx ends: it waits for the lock, acts
// while it holds it (LockKey) and waits again if it loses it. When it
// stops acting, it waits for the provider calls in flight (cancelled) and
// stops the instances of host-bound providers, recording their stop.
func (a *Autoscaler) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		lock, err := a.st.SessionLock(ctx, LockKey)
		switch {
		case err == nil:
			a.act(ctx, lock)
			lock.Release()
			continue
		case errors.Is(err, store.ErrLockHeld):
		case ctx.Err() == nil:
			a.log.Warn("autoscaler: cannot take the lock", "error", err)
		}
		t := time.NewTimer(a.cfg.Interval)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

// act runs passes while the lock is held and ctx lasts.
func (a *Autoscaler) act(ctx context.Context, lock store.Lock) {
	opCtx, cancel := context.WithCancel(ctx)
	a.mu.Lock()
	a.since, a.opCtx, a.pools = time.Now(), opCtx, map[int64]*poolState{}
	a.mu.Unlock()
	a.m.leader.Set(1)
	a.log.Info("acting as the farm's worker pool autoscaler")
	defer func() {
		cancel()
		a.wg.Wait()
		a.stopHostBound(context.WithoutCancel(ctx))
		a.m.leader.Set(0)
		a.m.setState(nil)
		a.log.Info("no longer acting as the farm's worker pool autoscaler")
	}()
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		if err := lock.Held(ctx); err != nil {
			if ctx.Err() == nil {
				a.log.Warn("autoscaler: lost the lock; another server may act now", "error", err)
			}
			return
		}
		if err := a.pass(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("autoscaler pass", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stopHostBound stops the instances of host-bound providers, which no
// other server could stop, and records their stop.
func (a *Autoscaler) stopHostBound(ctx context.Context) {
	for _, p := range a.cfg.Providers {
		hb, ok := p.(HostBound)
		if !ok {
			continue
		}
		names := hb.StopAll(a.cfg.StopTimeout)
		if len(names) == 0 {
			continue
		}
		v, err := a.st.PoolView(ctx)
		if err != nil {
			a.log.Warn("recording the stop of this server's instances", "error", err)
			continue
		}
		for _, inst := range v.Instances {
			if slices.Contains(names, inst.Name) {
				if err := a.st.StopPoolInstance(ctx, inst.ID, time.Now(), ReasonShutdown); err != nil {
					a.log.Warn("recording an instance's stop", "instance", inst.Name, "error", err)
				}
			}
		}
		a.log.Info("stopped the runners of process pools", "instances", names)
	}
}

// provider is pool p's provider, or nil.
func (a *Autoscaler) provider(p *model.WorkerPool) Provider { return a.cfg.Providers[p.Provider] }

// state is the acting autoscaler's state of pool p, made from what the
// pool's status recorded (failures and backoff survive a change of
// server).
func (a *Autoscaler) state(p *model.WorkerPool) *poolState {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps, ok := a.pools[p.ID]
	if !ok {
		ps = &poolState{warned: map[int64]bool{}, decided: p.Status.LastDecision}
		ps.b = &backoff.ExponentialBackOff{InitialInterval: a.cfg.BackoffInitial, RandomizationFactor: 0.2,
			Multiplier: 2, MaxInterval: a.cfg.BackoffMax}
		ps.b.Reset()
		ps.failures = p.Status.Failures
		for range max(0, ps.failures-1) {
			ps.b.NextBackOff()
		}
		if p.Status.BackoffUntil != nil {
			ps.backoffUntil = *p.Status.BackoffUntil
		}
		a.pools[p.ID] = ps
	}
	return ps
}

// busy reports whether a provider call about instance id runs, or ended
// after read: what was read of the instance then (a pass's view, a
// provider's list) may not show the call's outcome — an instance being
// destroyed still looks stopping, one just created is not listed — and
// acting on it would repeat the call.
func (a *Autoscaler) busy(id int64, read time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.ops[id]; ok {
		return true
	}
	t, ok := a.settled[id]
	return ok && t.After(read)
}

// settledFor is how long the end of a provider call is remembered: longer
// than any read it could postdate (a list runs at most maxExecTimeout).
const settledFor = maxExecTimeout + 2*execWaitDelay

// goOp runs a provider call about instance id (0: about a pool) in its
// own goroutine, one at a time per instance; false when one runs already.
func (a *Autoscaler) goOp(id int64, what string, fn func(ctx context.Context)) bool {
	a.mu.Lock()
	if _, ok := a.ops[id]; ok && id != 0 {
		a.mu.Unlock()
		return false
	}
	if id != 0 {
		a.ops[id] = what
	}
	ctx := a.opCtx
	a.wg.Add(1)
	a.mu.Unlock()
	go func() {
		defer a.wg.Done()
		defer func() {
			if id != 0 {
				a.mu.Lock()
				delete(a.ops, id)
				now := time.Now()
				a.settled[id] = now
				for k, t := range a.settled {
					if now.Sub(t) > settledFor {
						delete(a.settled, k)
					}
				}
				a.mu.Unlock()
			}
		}()
		fn(ctx)
	}()
	return true
}

// callTimeout bounds one provider call about pool p (the exec provider
// bounds its executable itself, within this).
func (a *Autoscaler) callTimeout(p *model.WorkerPool) time.Duration {
	if p.Provider == model.ProviderExec {
		if s, err := execSettings(p); err == nil {
			return time.Duration(s.Timeout) + execWaitDelay + time.Second
		}
	}
	return a.cfg.StopTimeout + 5*time.Second
}

// failed records a provider failure of pool p: counted, reported on the
// pool, and from the second in a row the pool backs off.
func (a *Autoscaler) failed(ctx context.Context, p *model.WorkerPool, err error) {
	ps := a.state(p)
	a.mu.Lock()
	ps.failures++
	n := ps.failures
	var wait time.Duration
	if n >= 2 {
		wait = ps.b.NextBackOff()
		ps.backoffUntil = time.Now().Add(wait)
	}
	until := ps.backoffUntil
	a.mu.Unlock()
	msg := err.Error()
	a.log.Warn("worker pool provider failed", "worker_pool", p.Name, "provider", p.Provider, "error", msg,
		"failures_in_a_row", n, "backoff", wait.Round(time.Millisecond).String())
	if err := a.st.RecordPoolStatus(ctx, p.ID, store.PoolStatusUpdate{Failures: &n, BackoffUntil: until, Error: &msg}); err != nil {
		a.log.Warn("recording a pool's failure", "worker_pool", p.Name, "error", err)
	}
}

// succeeded ends pool p's run of failures.
func (a *Autoscaler) succeeded(ctx context.Context, p *model.WorkerPool) {
	ps := a.state(p)
	a.mu.Lock()
	if ps.failures == 0 {
		a.mu.Unlock()
		return
	}
	ps.failures, ps.backoffUntil = 0, time.Time{}
	ps.b.Reset()
	a.mu.Unlock()
	zero := 0
	if err := a.st.RecordPoolStatus(ctx, p.ID, store.PoolStatusUpdate{Failures: &zero}); err != nil {
		a.log.Warn("recording a pool's recovery", "worker_pool", p.Name, "error", err)
	}
}

// backingOff says until when pool p backs off (zero: it does not).
func (a *Autoscaler) backingOff(p *model.WorkerPool, now time.Time) time.Time {
	ps := a.state(p)
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.Before(ps.backoffUntil) {
		return ps.backoffUntil
	}
	return time.Time{}
}

// record writes pool p's last decision when it changed, or at most once
// a minute while it stays the same kind.
func (a *Autoscaler) record(ctx context.Context, p *model.WorkerPool, kind, text string) {
	ps := a.state(p)
	a.mu.Lock()
	same := len(ps.decided) >= len(kind) && ps.decided[:len(kind)] == kind
	if same && time.Since(ps.decidedAt) < time.Minute {
		a.mu.Unlock()
		return
	}
	ps.decided, ps.decidedAt = text, time.Now()
	a.mu.Unlock()
	if err := a.st.RecordPoolStatus(ctx, p.ID, store.PoolStatusUpdate{Decision: &text}); err != nil {
		a.log.Warn("recording a pool's decision", "worker_pool", p.Name, "error", err)
	}
}
