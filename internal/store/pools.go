package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// Worker pools: the table of their settings, and what kiln keeps about
// them (status, runtime, budget) read along. The autoscaler's own writes
// live in instances.go.

// offerPattern is what an architecture or backend name a pool offers may
// look like: Debian's architecture names and short backend words.
var offerPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._+-]{0,63}$`)

func workerPoolDef() *tableDef[model.WorkerPool] {
	return &tableDef[model.WorkerPool]{
		name:  "worker pool",
		table: "worker_pools",
		columns: []string{"name", "provider", "settings", "enabled", "architectures", "backends", "concurrent", "min_idle",
			"max_instances", "idle_timeout", "startup_timeout", "max_seconds_per_month", "created_at"},
		id: func(o *model.WorkerPool) *int64 { return &o.ID },
		values: func(o *model.WorkerPool) []any {
			return []any{o.Name, o.Provider, jsonText(o.Settings), o.Enabled, jsonList(o.Architectures), jsonList(o.Backends),
				o.Concurrent, o.MinIdle, o.MaxInstances, time.Duration(o.IdleTimeout).Microseconds(), time.Duration(o.StartupTimeout).Microseconds(),
				nullInt(o.MaxSecondsPerMonth), toMicros(o.CreatedAt)}
		},
		stamp: func(o *model.WorkerPool, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.WorkerPool, error) {
			var o model.WorkerPool
			var settings, archs, backends []byte
			var idle, startup, created int64
			var budget sql.NullInt64
			if err := r.Scan(&o.ID, &o.Name, &o.Provider, &settings, &o.Enabled, &archs, &backends, &o.Concurrent, &o.MinIdle,
				&o.MaxInstances, &idle, &startup, &budget, &created); err != nil {
				return nil, err
			}
			if err := json.Unmarshal(archs, &o.Architectures); err != nil {
				return nil, fmt.Errorf("worker pool %d architectures: %w", o.ID, err)
			}
			if err := json.Unmarshal(backends, &o.Backends); err != nil {
				return nil, fmt.Errorf("worker pool %d backends: %w", o.ID, err)
			}
			o.Settings, o.CreatedAt, o.MaxSecondsPerMonth = rawJSON(settings), fromMicros(created), int64Ptr(budget)
			o.IdleTimeout, o.StartupTimeout = model.Duration(idle*1000), model.Duration(startup*1000)
			return &o, nil
		},
		filters:    map[string]string{"name": "name", "provider": "provider", "enabled": "enabled"},
		nameColumn: "name",
		load:       func(ctx context.Context, t *tx, o *model.WorkerPool) error { return t.poolStatus(ctx, o) },
		check:      checkWorkerPool,
		inUse: func(ctx context.Context, t *tx, o *model.WorkerPool) error {
			if n := o.Status.Live(); n > 0 {
				return conflict("", "worker pool %q has %d live instances: it is drained first (DELETE through the API does that)", o.Name, n)
			}
			return nil
		},
		afterWrite: func(ctx context.Context, t *tx, old, o *model.WorkerPool) error {
			if o == nil {
				return t.releasePoolWorkers(ctx, old)
			}
			return nil
		},
	}
}

// jsonList is a list as a JSON column value; nil is [].
func jsonList(l []string) jsonDoc {
	if l == nil {
		return "[]"
	}
	b, _ := json.Marshal(l)
	return jsonDoc(b)
}

// checkWorkerPool validates a pool's settings, each error naming its
// field. The provider's own settings are checked by the provider (package
// pool) before they get here; this checks that they are an object.
func checkWorkerPool(ctx context.Context, t *tx, old, o *model.WorkerPool) error {
	if old != nil && old.Status.Deleting {
		return conflict("", "worker pool %q is being deleted: its instances are drained", old.Name)
	}
	if err := checkName("name", o.Name); err != nil {
		return err
	}
	if !slices.Contains(model.Providers, o.Provider) {
		if o.Provider == "" {
			return invalid("provider", "is required: %s", strings.Join(model.Providers, " or "))
		}
		return invalid("provider", "%q is not a provider: use %s", o.Provider, strings.Join(model.Providers, " or "))
	}
	if err := checkJSONObject("settings", o.Settings); err != nil {
		return err
	}
	if len(o.Architectures) == 0 {
		return invalid("architectures", "is required: the architectures the pool's instances build for, e.g. [\"amd64\"]")
	}
	if err := checkOfferNames("architectures", o.Architectures); err != nil {
		return err
	}
	if err := checkOfferNames("backends", o.Backends); err != nil {
		return err
	}
	if slices.Contains(o.Backends, model.BackendAuto) {
		return invalid("backends", "%q is what requests ask for when any backend will do; list the backends the instances have, e.g. [\"unshare\"]", model.BackendAuto)
	}
	if o.Concurrent == 0 {
		o.Concurrent = 1 // as a runner that does not say
	}
	if o.Concurrent < 1 || o.Concurrent > model.MaxConcurrent {
		return invalid("concurrent", "must be 1 to %d requests an instance runs at once, got %d", model.MaxConcurrent, o.Concurrent)
	}
	switch {
	case o.MaxInstances < 1:
		return invalid("max_instances", "must be at least 1, got %d", o.MaxInstances)
	case o.MinIdle < 0:
		return invalid("min_idle", "must be 0 or more, got %d", o.MinIdle)
	case o.MinIdle > o.MaxInstances:
		return invalid("min_idle", "%d is more than max_instances (%d)", o.MinIdle, o.MaxInstances)
	case o.IdleTimeout <= 0:
		return invalid("idle_timeout", "must be positive, e.g. \"10m\"")
	case o.StartupTimeout <= 0:
		return invalid("startup_timeout", "must be positive, e.g. \"5m\"")
	case o.MaxSecondsPerMonth != nil && *o.MaxSecondsPerMonth <= 0:
		return invalid("max_seconds_per_month", "must be positive, or null for no budget")
	}
	return t.unique(ctx, "worker_pools", "name", o.Name, o.ID, "worker pool")
}

func checkOfferNames(field string, names []string) error {
	for i, n := range names {
		if !offerPattern.MatchString(n) {
			return invalid(field, "%q is not a valid name: use lower-case letters, digits and . _ + -", n)
		}
		if slices.Contains(names[:i], n) {
			return invalid(field, "%q is listed twice", n)
		}
	}
	return nil
}

// WorkerPools is the worker pool table. Create, Update and Delete write a
// pool's settings; its status and runtime are kept by the autoscaler's
// methods (instances.go) and read along. Delete refuses a pool with live
// instances: RemoveWorkerPool drains them first.
func (s *SQL) WorkerPools() Table[model.WorkerPool] { return s.workerPools() }

func (s *SQL) workerPools() *table[model.WorkerPool] {
	return &table[model.WorkerPool]{s, s.defs.workerPools}
}

// RemoveWorkerPool deletes a pool, or, while it has live instances, marks
// it for deletion and disables it: the autoscaler gives its instances no
// new work, waits for their tasks, destroys them and then deletes the
// pool. It returns nil when the pool is gone, and the pool as marked
// otherwise.
func (s *SQL) RemoveWorkerPool(ctx context.Context, id int64, v *Viewer) (*model.WorkerPool, error) {
	var out *model.WorkerPool
	err := s.inTx(ctx, func(t *tx) error {
		out = nil
		p, err := s.workerPools().get(ctx, t, id, v, true)
		if err != nil {
			return err
		}
		if p.Status.Live() == 0 {
			return s.workerPools().delete(ctx, t, id, v)
		}
		if _, err := t.exec(ctx, "UPDATE worker_pools SET deleting = TRUE, enabled = FALSE WHERE id = $1", id); err != nil {
			return err
		}
		out, err = s.workerPools().get(ctx, t, id, v, false)
		return err
	})
	return out, err
}

// poolStatus reads what kiln keeps about pool o: its status columns, its
// runtime (stopped instances' recorded runtime plus the live ones' age),
// the runtime its instances used this month and its live instances by
// state.
func (t *tx) poolStatus(ctx context.Context, o *model.WorkerPool) error {
	var st model.PoolStatus
	var backoff, errAt, decisionAt sql.NullInt64
	var stopped int64
	if err := t.queryRow(ctx, `SELECT deleting, failures, backoff_until, last_error, last_error_at, last_decision,
		last_decision_at, runtime FROM worker_pools WHERE id = $1`, o.ID).Scan(&st.Deleting, &st.Failures, &backoff,
		&st.LastError, &errAt, &st.LastDecision, &decisionAt, &stopped); err != nil {
		return fmt.Errorf("worker pool %d status: %w", o.ID, err)
	}
	st.BackoffUntil, st.LastErrorAt, st.LastDecisionAt = timePtr(backoff), timePtr(errAt), timePtr(decisionAt)
	now := t.s.now()
	st.Instances = map[model.InstanceState]int{}
	for _, k := range model.LiveInstanceStates {
		st.Instances[k] = 0
	}
	live := stopped
	if err := t.each(ctx, `SELECT i.state, i.created_at, w.connected_at IS NOT NULL, `+instanceRunning+`
		FROM pool_instances i JOIN workers w ON w.id = i.worker_id WHERE i.pool_id = $1 AND i.stopped_at IS NULL`,
		[]any{o.ID}, func(r *sql.Rows) error {
			var state string
			var created int64
			var connected bool
			var running int
			if err := r.Scan(&state, &created, &connected, &running); err != nil {
				return err
			}
			st.Instances[liveState(model.InstanceState(state), connected, running)]++
			live += max(0, toMicros(now)-created)
			return nil
		}); err != nil {
		return err
	}
	used, err := t.monthRuntime(ctx, o.ID, now)
	if err != nil {
		return err
	}
	st.BudgetUsedSeconds = used.Seconds()
	o.Status, o.RuntimeSeconds = st, float64(live)/1e6
	return nil
}

// instanceRunning counts the requests the worker of instance i runs, in
// a query over pool_instances i.
const instanceRunning = "(SELECT COUNT(*) FROM work_requests r WHERE r.worker_id = i.worker_id AND r.status = 'running')"

// liveState is how a live instance is reported: its stored state, or for
// one whose runner is connected, idle or busy.
func liveState(stored model.InstanceState, connected bool, running int) model.InstanceState {
	switch {
	case stored == model.InstanceStopping:
		return model.InstanceStopping
	case connected && running > 0:
		return model.InstanceBusy
	case connected:
		return model.InstanceIdle
	case stored == model.InstanceCreating:
		return model.InstanceCreating
	}
	return model.InstanceDisconnected
}

// MonthStart is the start of now's calendar month in UTC, from which a
// pool's budget counts.
func MonthStart(now time.Time) time.Time {
	y, m, _ := now.UTC().Date()
	return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
}

// monthRuntime is the runtime pool's instances used in now's calendar
// month: live instances through pool_instances_live, those stopped this
// month through pool_instances_stopped.
func (t *tx) monthRuntime(ctx context.Context, pool int64, now time.Time) (time.Duration, error) {
	ms, n := toMicros(MonthStart(now)), toMicros(now)
	var used sql.NullInt64
	err := t.queryRow(ctx, `SELECT SUM(ran) FROM (
		SELECT $3 - CASE WHEN created_at > $2 THEN created_at ELSE $2 END AS ran FROM pool_instances
			WHERE pool_id = $1 AND stopped_at IS NULL
		UNION ALL
		SELECT stopped_at - CASE WHEN created_at > $2 THEN created_at ELSE $2 END FROM pool_instances
			WHERE pool_id = $1 AND stopped_at > $2) AS month`, pool, ms, n).Scan(&used)
	return time.Duration(max(0, used.Int64)) * time.Microsecond, err
}

// releasePoolWorkers lets go of the workers of pool p as it is deleted:
// its instance history goes with it; a worker that ran work stays, out of
// the pool and disabled (work requests refer to it), the others go.
func (t *tx) releasePoolWorkers(ctx context.Context, p *model.WorkerPool) error {
	if _, err := t.exec(ctx, "DELETE FROM pool_instances WHERE pool_id = $1", p.ID); err != nil {
		return err
	}
	workers := t.s.workers()
	ids, err := t.ids(ctx, "SELECT id FROM workers WHERE worker_pool_id = $1 ORDER BY id", p.ID)
	if err != nil {
		return err
	}
	for _, id := range ids {
		ran, err := t.exists(ctx, "SELECT 1 FROM work_requests WHERE worker_id = $1 LIMIT 1", id)
		if err != nil {
			return err
		}
		if !ran {
			if err := workers.delete(ctx, t, id, nil); err != nil {
				return err
			}
			continue
		}
		if _, err := workers.update(ctx, t, id, nil, func(w *model.Worker) error {
			w.PoolID, w.Enabled = nil, false
			return nil
		}); err != nil {
			return err
		}
		if err := t.deleteTokensWhere(ctx, "worker_id", id); err != nil {
			return err
		}
	}
	return nil
}

// poolRuntimeQuery reads, for the public endpoint's snapshot, every
// pool's id, name and runtime at $1: the recorded runtime of its stopped
// instances plus the age of its live ones, O(pools + live instances) rows.
const poolRuntimeQuery = `SELECT p.id, p.name, p.runtime + COALESCE((SELECT SUM($1 - i.created_at) FROM pool_instances i
	WHERE i.pool_id = p.id AND i.stopped_at IS NULL), 0) FROM worker_pools p`
