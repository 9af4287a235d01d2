package store

import (
	"context"
	"database/sql"
	"time"
)

// Snapshot is everything the public metrics endpoint reports, read in one
// consistent snapshot. Its size is O(series): the running totals, plus one
// small row per scope, pool, file store, (user, scope) activity pair and
// enabled token. Nothing here reads work requests, artifacts or files.
type Snapshot struct {
	// Taken is the database's view of "now" for the age-based figures.
	Taken time.Time
	// Totals are the running totals of every family, grouped by family,
	// with the changes not yet folded (Fold) included. Labels hold scope_id
	// and worker_pool_id where the metric shows names; they are shared
	// with later snapshots: read-only.
	Totals []Total
	// ScopeNames maps scope ids to names.
	ScopeNames map[int64]string
	// PoolNames maps worker pool ids to names.
	PoolNames map[int64]string
	// PoolRuntime is each pool's accumulated runtime in seconds, including
	// instances still running up to Taken.
	PoolRuntime map[int64]float64
	// FileStores are all file stores (small table).
	FileStores []FileStoreSize
	// Activity is, per (user, scope), when the user last created a root
	// workflow there, with the issuers of the user's identities.
	Activity []Activity
	// TokenLastSeen holds, per enabled token, when it was last used (nil:
	// never).
	TokenLastSeen []*time.Time
	// ActivitySeries are the label sets the user-activity histograms ever
	// had (activity.go): each is reported, empty when no Activity is left.
	ActivitySeries []ActivitySeries
}

// FileStoreSize is the public part of a file store.
type FileStoreSize struct {
	Name      string
	Backend   string
	TotalSize int64
	MaxSize   *int64
}

// Activity is one (user, scope) pair of the user-activity histograms. The
// user is not identified: only the age and the issuers are reported.
type Activity struct {
	ScopeID        int64
	LastWorkflowAt time.Time
	Issuers        []string
}

// Snapshot reads the figures of one scrape in one read transaction: the
// totals and the journal rows not yet folded into them come from the same
// snapshot, so a fold running meanwhile changes nothing that it reports.
func (s *SQL) Snapshot(ctx context.Context) (*Snapshot, error) {
	snap := &Snapshot{Taken: s.now().UTC(), ScopeNames: map[int64]string{}, PoolNames: map[int64]string{}, PoolRuntime: map[int64]float64{}}
	err := s.readTx(ctx, func(t *tx) error {
		var err error
		if snap.Totals, err = t.ledgerTotals(ctx, s.metricsLedger()); err != nil {
			return err
		}
		if err := t.each(ctx, "SELECT id, name FROM scopes", nil, func(r *sql.Rows) error {
			var id int64
			var name string
			err := r.Scan(&id, &name)
			snap.ScopeNames[id] = name
			return err
		}); err != nil {
			return err
		}
		now := toMicros(snap.Taken)
		if err := t.each(ctx, `SELECT p.id, p.name, p.runtime + COALESCE((SELECT SUM($1 - w.instance_started_at) FROM workers w
			WHERE w.worker_pool_id = p.id AND w.instance_started_at IS NOT NULL), 0) FROM worker_pools p`, []any{now}, func(r *sql.Rows) error {
			var id, runtime int64
			var name string
			err := r.Scan(&id, &name, &runtime)
			snap.PoolNames[id], snap.PoolRuntime[id] = name, float64(runtime)/1e6
			return err
		}); err != nil {
			return err
		}
		if err := t.each(ctx, "SELECT name, backend, total_size, max_size FROM file_stores ORDER BY name", nil, func(r *sql.Rows) error {
			var f FileStoreSize
			var max sql.NullInt64
			err := r.Scan(&f.Name, &f.Backend, &f.TotalSize, &max)
			f.MaxSize = int64Ptr(max)
			snap.FileStores = append(snap.FileStores, f)
			return err
		}); err != nil {
			return err
		}
		if snap.ActivitySeries, err = t.activitySeries(ctx); err != nil {
			return err
		}
		issuers := map[int64][]string{}
		if err := t.each(ctx, `SELECT DISTINCT i.user_id, i.issuer FROM identities i JOIN user_scope_activity a ON a.user_id = i.user_id
			ORDER BY i.user_id, i.issuer`, nil, func(r *sql.Rows) error {
			var user int64
			var issuer string
			err := r.Scan(&user, &issuer)
			issuers[user] = append(issuers[user], issuer)
			return err
		}); err != nil {
			return err
		}
		if err := t.each(ctx, `SELECT a.user_id, a.scope_id, a.last_workflow_at FROM user_scope_activity a JOIN users u ON u.id = a.user_id
			WHERE NOT u.is_system ORDER BY a.scope_id, a.user_id`, nil, func(r *sql.Rows) error {
			var user, scope, at int64
			err := r.Scan(&user, &scope, &at)
			snap.Activity = append(snap.Activity, Activity{ScopeID: scope, LastWorkflowAt: fromMicros(at), Issuers: issuers[user]})
			return err
		}); err != nil {
			return err
		}
		return t.each(ctx, "SELECT last_seen_at FROM tokens WHERE enabled ORDER BY id", nil, func(r *sql.Rows) error {
			var seen sql.NullInt64
			err := r.Scan(&seen)
			snap.TokenLastSeen = append(snap.TokenLastSeen, timePtr(seen))
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return snap, nil
}

// each runs q and calls fn for every row.
func (t *tx) each(ctx context.Context, q string, args []any, fn func(*sql.Rows) error) error {
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
