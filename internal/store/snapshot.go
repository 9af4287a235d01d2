package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/stdlib"
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
	// TokenLastSeen holds, per enabled token, when it was last used (the
	// zero time: never).
	TokenLastSeen []time.Time
	// ActivitySeries are the label sets the user-activity histograms ever
	// had (activity.go): each is reported, empty when no Activity is left.
	ActivitySeries []ActivitySeries
}

// snapshotHints are the sizes of the last snapshot's longest lists, so
// that the next one allocates each once.
type snapshotHints struct{ tokens, activity int }

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
// Its queries go to the database together (readAll): on PostgreSQL in one
// round trip.
func (s *SQL) Snapshot(ctx context.Context) (*Snapshot, error) {
	snap := &Snapshot{Taken: s.now().UTC(), ScopeNames: map[int64]string{}, PoolNames: map[int64]string{}, PoolRuntime: map[int64]float64{}}
	totals := s.newLedgerRead(s.metricsLedger())
	var (
		id, user, scope, at, runtime int64
		name, backend, issuer        string
		size                         int64
		nullable                     pgtype.Int8
		activity                     ActivitySeries
		seen                         []pgtype.Int8 // last_seen_at of each enabled token
	)
	hints := s.hints.Load()
	if hints == nil {
		hints = &snapshotHints{}
	}
	seen = make([]pgtype.Int8, 0, hints.tokens)
	snap.Activity = make([]Activity, 0, hints.activity)
	issuers := map[int64][]string{}
	reads := append(totals.reads(),
		read{query: "SELECT id, name FROM scopes", dest: scan(&id, &name), row: func() error {
			snap.ScopeNames[id] = name
			return nil
		}},
		read{query: poolRuntimeQuery, args: []any{toMicros(snap.Taken)}, dest: scan(&id, &name, &runtime), row: func() error {
			snap.PoolNames[id], snap.PoolRuntime[id] = name, float64(runtime)/1e6
			return nil
		}},
		read{query: "SELECT name, backend, total_size, max_size FROM file_stores ORDER BY name",
			dest: scan(&name, &backend, &size, &nullable), row: func() error {
				f := FileStoreSize{Name: name, Backend: backend, TotalSize: size}
				if nullable.Valid {
					v := nullable.Int64
					f.MaxSize = &v
				}
				snap.FileStores = append(snap.FileStores, f)
				return nil
			}},
		read{query: "SELECT family, scope_id, issuer FROM activity_series ORDER BY family, scope_id, issuer",
			dest: scan(&activity.Family, &activity.ScopeID, &activity.Issuer), row: func() error {
				snap.ActivitySeries = append(snap.ActivitySeries, activity)
				return nil
			}},
		read{query: `SELECT DISTINCT i.user_id, i.issuer FROM identities i JOIN user_scope_activity a ON a.user_id = i.user_id
			ORDER BY i.user_id, i.issuer`, dest: scan(&user, &issuer), row: func() error {
			issuers[user] = append(issuers[user], issuer)
			return nil
		}},
		// issuers are read first: the activity rows share their slices
		read{query: `SELECT a.user_id, a.scope_id, a.last_workflow_at FROM user_scope_activity a JOIN users u ON u.id = a.user_id
			WHERE NOT u.is_system ORDER BY a.scope_id, a.user_id`, dest: scan(&user, &scope, &at), row: func() error {
			snap.Activity = append(snap.Activity, Activity{ScopeID: scope, LastWorkflowAt: fromMicros(at), Issuers: issuers[user]})
			return nil
		}},
		// in no order: the tokens are only counted into a histogram
		read{query: "SELECT last_seen_at FROM tokens WHERE enabled", dest: scan(&nullable), row: func() error {
			seen = append(seen, nullable)
			return nil
		}},
	)
	if err := s.readAll(ctx, reads...); err != nil {
		return nil, err
	}
	var err error
	if snap.Totals, err = totals.totals(); err != nil {
		return nil, err
	}
	snap.TokenLastSeen = make([]time.Time, len(seen))
	for i, v := range seen {
		if v.Valid {
			snap.TokenLastSeen[i] = fromMicros(v.Int64)
		}
	}
	s.hints.Store(&snapshotHints{tokens: len(seen), activity: len(snap.Activity)})
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

// read is one query of a snapshot (readAll) and what to do with its rows.
type read struct {
	query string
	args  []any
	// dest gives the destinations of a row's columns, once per query:
	// every row is scanned into the same ones. r tells which driver scans
	// them, for destinations that borrow the driver's buffer (rows.raw).
	dest func(r *rows) []any
	// row is called for each row once it is scanned into dest.
	row func() error
}

// scan is a read's dest when it does not depend on the driver.
func scan(dest ...any) func(*rows) []any { return func(*rows) []any { return dest } }

// rows are the rows of one read, from database/sql or from pgx itself.
type rows struct {
	pg bool
}

// raw is a destination for a text column that points into the driver's
// buffer instead of copying it: valid until the next row is scanned.
func (r *rows) raw(p *[]byte) any {
	if r.pg {
		return (*pgtype.DriverBytes)(p)
	}
	return (*sql.RawBytes)(p)
}

// readAll runs reads in order in one read-only transaction, so that they
// see one consistent snapshot. On PostgreSQL they travel together with
// their BEGIN and COMMIT in one pipelined batch, which pgx's own row
// scanning then reads: one round trip whatever their number. A scrape's
// reads took 11 round trips through database/sql, and on a loaded machine
// each waits for the server process and then for this one to be scheduled
// again (docs/benchmarks.md).
func (s *SQL) readAll(ctx context.Context, reads ...read) error {
	if s.dialect != Postgres {
		return s.readTx(ctx, func(t *tx) error { return t.run(ctx, reads...) })
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		c := dc.(*stdlib.Conn).Conn()
		b := &pgx.Batch{}
		b.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
		for _, rd := range reads {
			b.Queue(rd.query, rd.args...).Query(func(pr pgx.Rows) error {
				dest := rd.dest(&rows{pg: true})
				for pr.Next() {
					if err := pr.Scan(dest...); err != nil {
						return err
					}
					if err := rd.row(); err != nil {
						return err
					}
				}
				return pr.Err()
			})
		}
		b.Queue("COMMIT")
		err := c.SendBatch(ctx, b).Close()
		if err != nil && !c.IsClosed() && c.PgConn().TxStatus() != 'I' {
			// still in the transaction (a callback failed, or the
			// server did): end it, or have the pool drop the connection
			if _, rerr := c.Exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
				return errors.Join(err, driver.ErrBadConn)
			}
		}
		return err
	})
}

// run runs reads in order within t.
func (t *tx) run(ctx context.Context, reads ...read) error {
	for _, rd := range reads {
		if err := t.runOne(ctx, rd); err != nil {
			return err
		}
	}
	return nil
}

func (t *tx) runOne(ctx context.Context, rd read) error {
	r, err := t.query(ctx, rd.query, rd.args...)
	if err != nil {
		return err
	}
	defer r.Close()
	dest := rd.dest(&rows{})
	for r.Next() {
		if err := r.Scan(dest...); err != nil {
			return err
		}
		if err := rd.row(); err != nil {
			return err
		}
	}
	return r.Err()
}
