package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// Pool instances: what the autoscaler (package pool) reads and writes, one
// transaction per step of an instance's life, and the reads that show
// instances to people (API, CLI, dashboard).
//
// An instance lives from StartPoolInstance (its runtime starts: kiln asks
// the provider for it) to StopPoolInstance (its runtime ends and is added
// to its pool's). In between it is creating until its runner connects,
// then running; RetirePoolInstance makes it stopping, and only when its
// runner runs nothing, in the same transaction that disables its worker:
// claims lock the worker and refuse a disabled one, so an instance being
// stopped never gets new work, and one that got work is not stopped.

// LiveInstance is a live instance as the autoscaler sees it: the instance
// with what its worker is doing now.
type LiveInstance struct {
	model.PoolInstance
	// WorkerConnectedAt is when the worker's current connection started
	// (nil: its runner is not connected).
	WorkerConnectedAt *time.Time
	// WorkerLastSeenAt is the worker's last heartbeat.
	WorkerLastSeenAt *time.Time
	// Capacity is how many tasks its runner runs at once (from its
	// metadata; 1 before it connected).
	Capacity int
}

// SpareWorker is a connected, enabled external worker that can take more
// work now: pending requests it can run are about to be claimed.
type SpareWorker struct {
	WorkerID int64
	PoolID   *int64
	Offer    model.Offer
	// Spare is how many more tasks it takes (capacity − running).
	Spare int
}

// PoolView is what the autoscaler decides from, read in one snapshot:
// every pool with its status, every live instance and the workers that
// have room for more work.
type PoolView struct {
	Now       time.Time
	Pools     []model.WorkerPool
	Instances []LiveInstance
	Spare     []SpareWorker
}

// PoolView reads the autoscaler's view. Its size is O(pools + live
// instances + connected workers); it reads no work request but the
// running ones of those workers.
func (s *SQL) PoolView(ctx context.Context) (*PoolView, error) {
	v := &PoolView{Now: s.now()}
	err := s.readTx(ctx, func(t *tx) error {
		v.Pools, v.Instances, v.Spare = nil, nil, nil
		pools := s.workerPools()
		rows, err := t.query(ctx, pools.selectSQL()+" ORDER BY id")
		if err != nil {
			return err
		}
		for rows.Next() {
			p, err := pools.def.scan(rows)
			if err != nil {
				rows.Close()
				return err
			}
			v.Pools = append(v.Pools, *p)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		for i := range v.Pools {
			if err := t.poolStatus(ctx, &v.Pools[i]); err != nil {
				return err
			}
		}
		if v.Instances, err = t.liveInstances(ctx, "i.stopped_at IS NULL ORDER BY i.id"); err != nil {
			return err
		}
		return t.each(ctx, `SELECT w.id, w.worker_pool_id, w.name, w.metadata, `+workerRunning+` FROM workers w
			WHERE w.connected_at IS NOT NULL AND w.enabled AND w.worker_type = 'external' ORDER BY w.id`, nil, func(r *sql.Rows) error {
			var sw SpareWorker
			var pool sql.NullInt64
			var name string
			var meta []byte
			var running int
			if err := r.Scan(&sw.WorkerID, &pool, &name, &meta, &running); err != nil {
				return err
			}
			var m model.WorkerMetadata
			if err := json.Unmarshal(meta, &m); err != nil {
				return fmt.Errorf("worker %d metadata: %w", sw.WorkerID, err)
			}
			if sw.Spare = m.Capacity() - running; sw.Spare > 0 {
				sw.PoolID = int64Ptr(pool)
				sw.Offer = model.Offer{Name: name, WorkerType: model.WorkerExternal, Architectures: m.Architectures, Backends: m.Backends}
				v.Spare = append(v.Spare, sw)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// workerRunning counts the requests worker w runs, in a query over
// workers w.
const workerRunning = "(SELECT COUNT(*) FROM work_requests r WHERE r.worker_id = w.id AND r.status = 'running')"

// instanceColumns is the select list of an instance (pool_instances i,
// workers w) as scanInstance reads it.
const instanceColumns = `i.id, i.name, i.pool_id, i.slot, i.worker_id, w.name, i.state, i.provider_id, i.created_at,
	i.connected_at, i.idle_since, i.last_seen_at, i.stopped_at, i.stop_reason, i.error, i.exit_status, i.stderr,
	w.connected_at, w.last_seen_at, w.metadata,
	CASE WHEN i.stopped_at IS NULL THEN ` + instanceRunning + ` ELSE 0 END,
	CASE WHEN i.stopped_at IS NULL THEN (SELECT MIN(r.id) FROM work_requests r WHERE r.worker_id = i.worker_id AND r.status = 'running') END`

// scanInstance reads one row of instanceColumns at now.
func scanInstance(r scanner, now time.Time) (*LiveInstance, error) {
	var li LiveInstance
	o := &li.PoolInstance
	var state string
	var created, seen int64
	var connected, idle, stopped, exit, wConnected, wSeen, current sql.NullInt64
	var meta []byte
	if err := r.Scan(&o.ID, &o.Name, &o.PoolID, &o.Slot, &o.WorkerID, &o.WorkerName, &state, &o.ProviderID, &created,
		&connected, &idle, &seen, &stopped, &o.StopReason, &o.Error, &exit, &o.Stderr,
		&wConnected, &wSeen, &meta, &o.Running, &current); err != nil {
		return nil, err
	}
	var m model.WorkerMetadata
	if err := json.Unmarshal(meta, &m); err != nil {
		return nil, fmt.Errorf("worker %d metadata: %w", o.WorkerID, err)
	}
	o.CreatedAt, o.ConnectedAt, o.IdleSince, o.LastSeenAt = fromMicros(created), timePtr(connected), timePtr(idle), fromMicros(seen)
	o.StoppedAt, o.CurrentWorkRequest = timePtr(stopped), int64Ptr(current)
	if exit.Valid {
		e := int(exit.Int64)
		o.ExitStatus = &e
	}
	o.State = model.InstanceState(state)
	end := now
	if o.StoppedAt != nil {
		end = *o.StoppedAt
	} else {
		li.WorkerConnectedAt, li.WorkerLastSeenAt = timePtr(wConnected), timePtr(wSeen)
		o.State = liveState(o.State, wConnected.Valid, o.Running)
	}
	o.RuntimeSeconds = max(0, end.Sub(o.CreatedAt).Seconds())
	li.Capacity = 1
	if wConnected.Valid {
		li.Capacity = m.Capacity()
	}
	return &li, nil
}

// liveInstances reads the instances that clause (a WHERE condition over
// pool_instances i, with its ORDER BY) selects.
func (t *tx) liveInstances(ctx context.Context, clause string, args ...any) ([]LiveInstance, error) {
	now := t.s.now()
	var out []LiveInstance
	err := t.each(ctx, "SELECT "+instanceColumns+" FROM pool_instances i JOIN workers w ON w.id = i.worker_id WHERE "+clause,
		args, func(r *sql.Rows) error {
			li, err := scanInstance(r, now)
			if err == nil {
				out = append(out, *li)
			}
			return err
		})
	return out, err
}

// InstanceQuery selects a page of a pool's instances, in id order (the
// order they were started), keyset-paginated like Query.
type InstanceQuery struct {
	PoolID int64
	// All includes stopped instances; by default only live ones.
	All bool
	// After is the last id of the previous page.
	After int64
	// Stopped lists only stopped instances, the last stopped first
	// (through pool_instances_stopped), instead of a page by id: the
	// dashboard's "recently stopped". After is ignored.
	Stopped bool
	Limit   int
}

// PoolInstances lists a pool's instances by id, or its last stopped ones:
// what `kiln pool instances` and the dashboard show.
func (s *SQL) PoolInstances(ctx context.Context, q InstanceQuery) ([]model.PoolInstance, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultPageSize
	}
	limit = min(limit, MaxPageSize)
	cond, args := []string{"i.pool_id = $1", "i.id > $2"}, []any{q.PoolID, q.After}
	order := " ORDER BY i.id"
	switch {
	case q.Stopped:
		cond, args = []string{"i.pool_id = $1", "i.stopped_at IS NOT NULL"}, []any{q.PoolID}
		order = " ORDER BY i.stopped_at DESC"
	case !q.All:
		cond = append(cond, "i.stopped_at IS NULL")
	}
	out := []model.PoolInstance{}
	err := s.readTx(ctx, func(t *tx) error {
		if ok, err := t.exists(ctx, "SELECT 1 FROM worker_pools WHERE id = $1", q.PoolID); err != nil || !ok {
			if err == nil {
				err = fmt.Errorf("worker pool %d: %w", q.PoolID, ErrNotFound)
			}
			return err
		}
		lis, err := t.liveInstances(ctx, strings.Join(cond, " AND ")+order+" LIMIT "+strconv.Itoa(limit), args...)
		for i := range lis {
			out = append(out, lis[i].PoolInstance)
		}
		return err
	})
	return out, err
}

// PendingWorkerRequests counts, up to limit, the pending Worker requests
// for host architecture arch with backend (as the request names it:
// "auto" when any will do), through the claims' partial index: it reads
// at most limit index entries whatever the queue holds.
func (s *SQL) PendingWorkerRequests(ctx context.Context, arch, backend string, limit int) (int, error) {
	var args []any
	// literals where safe, as claims write them, for PostgreSQL's
	// generic plans (nextRequestQuery)
	value := func(v string) string {
		if safeLiteral.MatchString(v) {
			return "'" + v + "'"
		}
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	q := "SELECT COUNT(*) FROM (SELECT 1 FROM work_requests WHERE status = 'pending' AND task_type = 'Worker' AND host_architecture = " +
		value(arch) + " AND backend = " + value(backend) + " LIMIT " + strconv.Itoa(max(0, limit)) + ") AS backlog"
	var n int
	err := s.db.QueryRowContext(ctx, q, args...).Scan(&n)
	return n, err
}

// ErrPoolFull is returned by StartPoolInstance for a pool that may not
// start an instance now: disabled, being deleted, or at max_instances.
var ErrPoolFull = &FieldError{Field: "max_instances", Message: "the worker pool may not start an instance now", Kind: Conflict}

// StartPoolInstance records a new instance of pool poolID, whose runtime
// starts now, in state creating, and returns it with the secret of a
// fresh token of its worker: the runner on the instance connects with it,
// and it is deleted when the instance stops. The instance runs the
// pool's worker of the lowest free slot ("<pool>-<slot>", created when
// missing, enabled), whose earlier tokens are deleted.
func (s *SQL) StartPoolInstance(ctx context.Context, poolID int64) (*model.PoolInstance, string, error) {
	var out *model.PoolInstance
	var secret string
	err := s.inTx(ctx, func(t *tx) error {
		p, err := s.workerPools().get(ctx, t, poolID, nil, true)
		if err != nil {
			return err
		}
		if !p.CanStart() || p.Status.Live() >= p.MaxInstances {
			return ErrPoolFull
		}
		slot, w, err := t.freeSlot(ctx, p)
		if err != nil {
			return err
		}
		if err := t.deleteTokensWhere(ctx, "worker_id", w.ID); err != nil {
			return err
		}
		if !w.Enabled {
			if _, err := s.workers().update(ctx, t, w.ID, nil, func(w *model.Worker) error { w.Enabled = true; return nil }); err != nil {
				return err
			}
		}
		secret = NewSecret()
		if _, err := s.createTokenTx(ctx, t, model.Token{WorkerID: &w.ID, Enabled: true,
			Comment: "instance of worker pool " + p.Name}, secret); err != nil {
			return err
		}
		now := toMicros(s.now())
		var id int64
		if err := t.queryRow(ctx, `INSERT INTO pool_instances (pool_id, slot, name, worker_id, state, created_at, last_seen_at)
			VALUES ($1, $2, '', $3, 'creating', $4, $4) RETURNING id`, p.ID, slot, w.ID, now).Scan(&id); err != nil {
			return fmt.Errorf("record instance: %w", err)
		}
		if _, err := t.exec(ctx, "UPDATE pool_instances SET name = $1 WHERE id = $2", p.Name+"-"+itoa(id), id); err != nil {
			return err
		}
		lis, err := t.liveInstances(ctx, "i.id = $1", id)
		if err != nil {
			return err
		}
		out = &lis[0].PoolInstance
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, secret, nil
}

// freeSlot finds the lowest slot of pool p that no live instance uses and
// whose worker is not connected (a runner of an earlier instance may still
// be on its way out), with that worker, created when missing.
func (t *tx) freeSlot(ctx context.Context, p *model.WorkerPool) (int, *model.Worker, error) {
	used := map[int]bool{}
	if err := t.each(ctx, "SELECT slot FROM pool_instances WHERE pool_id = $1 AND stopped_at IS NULL", []any{p.ID}, func(r *sql.Rows) error {
		var slot int
		err := r.Scan(&slot)
		used[slot] = true
		return err
	}); err != nil {
		return 0, nil, err
	}
	workers := t.s.workers()
	for slot := 1; slot <= p.MaxInstances+len(used)+64; slot++ {
		if used[slot] {
			continue
		}
		name := p.Name + "-" + strconv.Itoa(slot)
		var w *model.Worker
		id, err := t.idOf(ctx, "SELECT id FROM workers WHERE name = $1", name)
		switch {
		case errors.Is(err, errNoRows):
			// what the pool says its instances offer, until the runner
			// reports its own
			w = &model.Worker{Name: name, WorkerType: model.WorkerExternal, Enabled: true, PoolID: &p.ID,
				Metadata: model.WorkerMetadata{Architectures: p.Architectures, HostArchitecture: p.Architectures[0], Backends: p.Backends}}
			if err := workers.create(ctx, t, w); err != nil {
				return 0, nil, err
			}
			return slot, w, nil
		case err != nil:
			return 0, nil, err
		}
		if w, err = workers.get(ctx, t, id, nil, true); err != nil {
			return 0, nil, err
		}
		if w.PoolID == nil || *w.PoolID != p.ID || w.WorkerType != model.WorkerExternal {
			return 0, nil, conflict("name", "worker %q, which the pool's slot %d would use, exists outside the pool: rename or delete it", name, slot)
		}
		if w.ConnectedAt == nil {
			return slot, w, nil
		}
	}
	return 0, nil, conflict("", "worker pool %q has no free slot: the runners of its earlier instances are still connected", p.Name)
}

// idOf runs a query returning one id.
func (t *tx) idOf(ctx context.Context, q string, args ...any) (int64, error) {
	var id int64
	err := t.queryRow(ctx, q, args...).Scan(&id)
	return id, err
}

// PoolInstanceCreated records what the provider calls a live instance
// after its create succeeded.
func (s *SQL) PoolInstanceCreated(ctx context.Context, id int64, providerID string) error {
	return s.instanceUpdate(ctx, id, "provider_id = $2", providerID)
}

// PoolInstanceConnected records that a creating instance's runner
// connected, at: it is running from then on.
func (s *SQL) PoolInstanceConnected(ctx context.Context, id int64, at time.Time) error {
	return s.instanceUpdate(ctx, id, "state = CASE WHEN state = 'creating' THEN 'running' ELSE state END, connected_at = COALESCE(connected_at, $2)", toMicros(at))
}

// SetPoolInstanceIdle records since when a live instance's runner has had
// nothing to do; nil when it has work.
func (s *SQL) SetPoolInstanceIdle(ctx context.Context, id int64, since *time.Time) error {
	return s.instanceUpdate(ctx, id, "idle_since = $2", nullMicros(since))
}

// InstanceFailure is a provider's failure about one instance.
type InstanceFailure struct {
	// Error says what failed ("create: …").
	Error string
	// ExitStatus and Stderr are an executable's (exec provider); nil and
	// "" otherwise.
	ExitStatus *int
	Stderr     string
}

// RecordPoolInstanceFailure records a provider's failure on an instance,
// live or stopped.
func (s *SQL) RecordPoolInstanceFailure(ctx context.Context, id int64, f InstanceFailure) error {
	var exit any
	if f.ExitStatus != nil {
		exit = *f.ExitStatus
	}
	_, err := s.db.ExecContext(ctx, "UPDATE pool_instances SET error = $2, exit_status = $3, stderr = $4 WHERE id = $1",
		id, f.Error, exit, f.Stderr)
	return err
}

// instanceUpdate sets columns of a live instance.
func (s *SQL) instanceUpdate(ctx context.Context, id int64, set string, args ...any) error {
	res, err := s.db.ExecContext(ctx, "UPDATE pool_instances SET "+set+" WHERE id = $1 AND stopped_at IS NULL", append([]any{id}, args...)...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("live pool instance %d: %w", id, ErrNotFound)
	}
	return nil
}

// RetirePoolInstance makes a live instance stopping, so that it can be
// destroyed, and disables its worker so that it gets no new work — but
// only when its runner runs nothing and, when idleFor is positive,
// finished nothing within idleFor: it returns false, changing nothing,
// for an instance that has (or just had) work. An instance already
// stopping is retired already (true).
func (s *SQL) RetirePoolInstance(ctx context.Context, id int64, reason string, idleFor time.Duration) (bool, error) {
	retired := false
	err := s.inTx(ctx, func(t *tx) error {
		retired = false
		var worker int64
		var state string
		if err := t.queryRow(ctx, "SELECT worker_id, state FROM pool_instances WHERE id = $1 AND stopped_at IS NULL", id).Scan(&worker, &state); err != nil {
			if errors.Is(err, errNoRows) {
				return fmt.Errorf("live pool instance %d: %w", id, ErrNotFound)
			}
			return err
		}
		if state == string(model.InstanceStopping) {
			retired = true
			return nil
		}
		// the worker's lock orders this against claims; what it runs is
		// counted once the lock is held (lockWorker's own count may
		// predate the wait, and miss a claim that held the lock)
		w, _, err := t.s.lockWorker(ctx, t, worker)
		if err != nil {
			return err
		}
		var running int
		if err := t.queryRow(ctx, "SELECT "+runningOf("$1"), worker).Scan(&running); err != nil {
			return err
		}
		if running > 0 {
			return nil
		}
		if idleFor > 0 {
			busy, err := t.exists(ctx, `SELECT 1 FROM work_requests WHERE worker_id = $1 AND status IN ('completed', 'aborted')
				AND completed_at > $2 LIMIT 1`, worker, toMicros(s.now().Add(-idleFor)))
			if err != nil || busy {
				return err
			}
		}
		if w.Enabled {
			if _, err := t.exec(ctx, "UPDATE workers SET enabled = FALSE WHERE id = $1", worker); err != nil {
				return err
			}
		}
		if _, err := t.exec(ctx, "UPDATE pool_instances SET state = 'stopping', stop_reason = $2 WHERE id = $1", id, reason); err != nil {
			return err
		}
		retired = true
		return nil
	})
	return retired, err
}

// AbandonPoolInstance makes a live instance stopping whatever its runner
// runs — its runner is gone, or never came — and disables its worker.
// A request its runner held goes back to the queue after the heartbeat
// timeout (RequeueLostWork), as any lost runner's.
func (s *SQL) AbandonPoolInstance(ctx context.Context, id int64, reason string) error {
	return s.inTx(ctx, func(t *tx) error {
		var worker int64
		err := t.queryRow(ctx, "UPDATE pool_instances SET state = 'stopping', stop_reason = CASE WHEN stop_reason = '' THEN $2 ELSE stop_reason END WHERE id = $1 AND stopped_at IS NULL RETURNING worker_id",
			id, reason).Scan(&worker)
		if errors.Is(err, errNoRows) {
			return fmt.Errorf("live pool instance %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		_, err = t.exec(ctx, "UPDATE workers SET enabled = FALSE WHERE id = $1", worker)
		return err
	})
}

// StopPoolInstance records that a live instance stopped at at (now, or
// when it was last seen for one found gone), with the reason: its
// runtime is added to its pool's, its worker is disabled and its tokens
// are deleted, so that nothing can connect as it any more. Stopping an
// instance that stopped already changes nothing.
func (s *SQL) StopPoolInstance(ctx context.Context, id int64, at time.Time, reason string) error {
	return s.inTx(ctx, func(t *tx) error {
		var pool, worker, created int64
		err := t.queryRow(ctx, "SELECT pool_id, worker_id, created_at FROM pool_instances WHERE id = $1 AND stopped_at IS NULL"+t.forUpdate(), id).
			Scan(&pool, &worker, &created)
		if errors.Is(err, errNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		end := max(created, min(toMicros(at), toMicros(s.now())))
		if _, err := t.exec(ctx, "UPDATE pool_instances SET state = 'stopped', stopped_at = $2, stop_reason = CASE WHEN stop_reason = '' THEN $3 ELSE stop_reason END, idle_since = NULL WHERE id = $1",
			id, end, reason); err != nil {
			return err
		}
		if _, err := t.exec(ctx, "UPDATE worker_pools SET runtime = runtime + $2 WHERE id = $1", pool, end-created); err != nil {
			return err
		}
		if _, err := t.exec(ctx, "UPDATE workers SET enabled = FALSE WHERE id = $1", worker); err != nil {
			return err
		}
		return t.deleteTokensWhere(ctx, "worker_id", worker)
	})
}

// TouchPoolInstances records when live instances were last known alive
// (seen: instance id → time), never moving a sighting back: one
// statement, outside the running totals.
func (s *SQL) TouchPoolInstances(ctx context.Context, seen map[int64]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	ids := slices.Sorted(maps.Keys(seen))
	var cases strings.Builder
	var args []any
	ph := make([]string, len(ids))
	for i, id := range ids {
		args = append(args, id, toMicros(seen[id]))
		fmt.Fprintf(&cases, " WHEN $%d THEN CAST($%d AS BIGINT)", 2*i+1, 2*i+2)
		ph[i] = "$" + strconv.Itoa(2*i+1)
	}
	at := "CASE id" + cases.String() + " END"
	_, err := s.db.ExecContext(ctx, "UPDATE pool_instances SET last_seen_at = "+at+" WHERE stopped_at IS NULL AND id IN ("+
		strings.Join(ph, ", ")+") AND last_seen_at < "+at, args...)
	return err
}

// PoolStatusUpdate is what the autoscaler records about a pool; nil
// fields are left alone.
type PoolStatusUpdate struct {
	// Failures and BackoffUntil are set together (a zero BackoffUntil
	// clears it).
	Failures     *int
	BackoffUntil time.Time
	// Error is the last failure's description, recorded with the time.
	Error *string
	// Decision is the autoscaler's last decision, recorded with the time.
	Decision *string
}

// RecordPoolStatus records what the autoscaler says about pool id.
func (s *SQL) RecordPoolStatus(ctx context.Context, id int64, u PoolStatusUpdate) error {
	now := toMicros(s.now())
	var sets []string
	args := []any{id}
	add := func(col string, v any) {
		args = append(args, v)
		sets = append(sets, col+" = $"+strconv.Itoa(len(args)))
	}
	if u.Failures != nil {
		add("failures", *u.Failures)
		var until any
		if !u.BackoffUntil.IsZero() {
			until = toMicros(u.BackoffUntil)
		}
		add("backoff_until", until)
	}
	if u.Error != nil {
		add("last_error", *u.Error)
		add("last_error_at", now)
	}
	if u.Decision != nil {
		add("last_decision", *u.Decision)
		add("last_decision_at", now)
	}
	if len(sets) == 0 {
		return nil
	}
	_, err := s.db.ExecContext(ctx, "UPDATE worker_pools SET "+strings.Join(sets, ", ")+" WHERE id = $1", args...)
	return err
}

// FinishPoolDeletion deletes a pool marked for deletion once it has no
// live instance; it reports whether the pool is gone.
func (s *SQL) FinishPoolDeletion(ctx context.Context, id int64) (bool, error) {
	deleted := false
	err := s.inTx(ctx, func(t *tx) error {
		deleted = false
		p, err := s.workerPools().get(ctx, t, id, nil, true)
		if errors.Is(err, ErrNotFound) {
			deleted = true
			return nil
		}
		if err != nil || !p.Status.Deleting || p.Status.Live() > 0 {
			return err
		}
		deleted = true
		return s.workerPools().delete(ctx, t, id, nil)
	})
	return deleted, err
}
