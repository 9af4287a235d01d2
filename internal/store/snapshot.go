package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
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
	// TokenLastSeen is the distribution of the time since each enabled
	// token was last used, in TokenAgeBounds; tokens never used are not in
	// it.
	TokenLastSeen AgeHistogram
	// ActivitySeries are the label sets the user-activity histograms ever
	// had (activity.go): each is reported, empty when no Activity is left.
	ActivitySeries []ActivitySeries
}

// TokenAgeBounds are the upper bounds, in seconds, of the buckets of
// Snapshot.TokenLastSeen: a minute (the granularity of last_seen_at), an
// hour, a day, a week, 30, 90 and 365 days. The database counts the tokens
// into them: a scrape reads one row however many tokens there are, where
// reading every token's last_seen_at was 15 % of a scrape's time with
// 10,000 tokens (docs/benchmarks.md).
var TokenAgeBounds = []int64{60, 3600, 86400, 7 * 86400, 30 * 86400, 90 * 86400, 365 * 86400}

// AgeHistogram is a distribution of ages that the database counted.
type AgeHistogram struct {
	// Counts are, per bound, the ages at most that many seconds and more
	// than the bound before; the last is the ages past every bound.
	Counts []int64
	// Sum is the sum of the ages in seconds, summed exactly in
	// microseconds.
	Sum float64
}

// tokenAgesQuery counts the ages of enabled tokens last used before $1
// (microseconds) into TokenAgeBounds, one column per bucket (the ages
// at most that bound and past the one before, then those past every
// bound), and sums them in microseconds, as a float (the exact sum could
// pass BIGINT's range). A token "used" after $1 (another replica's
// clock ran ahead) counts as age 0.
//
// Each bucket is a range of last_seen_at that one read of the index
// tokens_enabled_last_seen counts and sums (migration 0017): 0.57 ms on
// PostgreSQL for 10,000 tokens, where computing each token's age and
// bucket took 2.6 ms. PostgreSQL sums a range's ages exactly as count ×
// $1 − Σ last_seen_at in NUMERIC; SQLite, whose integer sums stop at
// int64, adds them up as floats (TOTAL, compensated).
func (s *SQL) tokenAgesQuery() string {
	const now = "CAST($1 AS BIGINT)"
	rangeSum, sum := "CAST(COUNT(*) AS NUMERIC) * "+now+" - COALESCE(SUM(last_seen_at), 0)", "CAST(SUM(s) AS DOUBLE PRECISION)"
	if s.dialect != Postgres {
		rangeSum, sum = "TOTAL("+now+" - last_seen_at)", "TOTAL(s)"
	}
	var b strings.Builder
	b.WriteString("SELECT ")
	for i := range len(TokenAgeBounds) + 1 {
		fmt.Fprintf(&b, "COALESCE(CAST(SUM(n) FILTER (WHERE b = %d) AS BIGINT), 0), ", i)
	}
	fmt.Fprintf(&b, "COALESCE(%s, 0) FROM (", sum)
	fmt.Fprintf(&b, "SELECT 0 AS b, COUNT(*) AS n, 0 AS s FROM tokens WHERE enabled AND last_seen_at > %s", now)
	newer := now // the range's end: last_seen_at at most this
	for i, bound := range TokenAgeBounds {
		op := "<"
		if i == 0 {
			op = "<="
		}
		fmt.Fprintf(&b, " UNION ALL SELECT %d, COUNT(*), %s FROM tokens WHERE enabled AND last_seen_at %s %s AND last_seen_at >= %s - %d",
			i, rangeSum, op, newer, now, bound*1_000_000)
		newer = fmt.Sprintf("%s - %d", now, bound*1_000_000)
	}
	fmt.Fprintf(&b, " UNION ALL SELECT %d, COUNT(*), %s FROM tokens WHERE enabled AND last_seen_at < %s) x",
		len(TokenAgeBounds), rangeSum, newer)
	return b.String()
}

// snapshotHints are the sizes of the last snapshot's longest lists, so
// that the next one allocates each once.
type snapshotHints struct{ activity int }

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
	// to the microsecond, as the database keeps times: ages computed in
	// SQL and in Go then agree
	snap := &Snapshot{Taken: s.now().UTC().Truncate(time.Microsecond), ScopeNames: map[int64]string{}, PoolNames: map[int64]string{}, PoolRuntime: map[int64]float64{}}
	totals := s.newLedgerRead(s.metricsLedger())
	var (
		id, user, scope, at, runtime int64
		name, backend, issuer        string
		size                         int64
		nullable                     pgtype.Int8
		activity                     ActivitySeries
		ages                         = make([]int64, len(TokenAgeBounds)+1) // per bucket
		ageSum                       float64
	)
	hints := s.hints.Load()
	if hints == nil {
		hints = &snapshotHints{}
	}
	snap.Activity = make([]Activity, 0, hints.activity)
	issuers := map[int64][]string{}
	// two groups that share no destination or state: on PostgreSQL they
	// run in parallel (readGroups)
	ledger := append(totals.reads(),
		read{query: s.tokenAgesQuery(), args: []any{toMicros(snap.Taken)}, dest: func(*rows) []any {
			dest := make([]any, 0, len(ages)+1)
			for i := range ages {
				dest = append(dest, &ages[i])
			}
			return append(dest, &ageSum)
		}, row: func() error { return nil }})
	others := []read{
		{query: "SELECT id, name FROM scopes", dest: scan(&id, &name), row: func() error {
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
	}
	if err := s.readGroups(ctx, ledger, others); err != nil {
		return nil, err
	}
	var err error
	if snap.Totals, err = totals.totals(); err != nil {
		return nil, err
	}
	snap.TokenLastSeen = AgeHistogram{Counts: ages, Sum: ageSum / 1e6}
	s.hints.Store(&snapshotHints{activity: len(snap.Activity)})
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
	return readBatch(ctx, conn, []string{beginSnapshot}, reads, []string{"COMMIT"})
}

// beginSnapshot starts the transaction of a snapshot's reads.
const beginSnapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"

// readBatch sends, on PostgreSQL connection conn, the statements of before,
// reads, and the statements of after in one pipelined batch, and handles
// the rows as pgx reads them. When it fails inside the transaction, the
// transaction is rolled back (or the connection dropped).
func readBatch(ctx context.Context, conn *sql.Conn, before []string, reads []read, after []string) error {
	return conn.Raw(func(dc any) error {
		c := dc.(*stdlib.Conn).Conn()
		b := &pgx.Batch{}
		for _, q := range before {
			b.Queue(q)
		}
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
		for _, q := range after {
			b.Queue(q)
		}
		err := c.SendBatch(ctx, b).Close()
		if err != nil {
			rollback(ctx, c, &err)
		}
		return err
	})
}

// rollback ends the transaction that c may still be in after *err, or
// has the pool drop c.
func rollback(ctx context.Context, c *pgx.Conn, err *error) {
	if !c.IsClosed() && c.PgConn().TxStatus() != 'I' {
		if _, rerr := c.Exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
			*err = errors.Join(*err, driver.ErrBadConn)
		}
	}
}

// readGroups is readAll for groups of reads that share no destination or
// state. On PostgreSQL each group runs on a connection of its own, in
// parallel, in one snapshot: the first connection exports its snapshot
// (pg_export_snapshot) and the others import it (SET TRANSACTION
// SNAPSHOT), as pg_dump's parallel workers do, and it commits only once
// they have all read. The database then executes a scrape's queries on
// two cores, not one after the other (docs/benchmarks.md). With fewer
// than two connections allowed, the groups run one after the other.
func (s *SQL) readGroups(ctx context.Context, groups ...[]read) error {
	if s.dialect != Postgres || len(groups) < 2 || s.db.Stats().MaxOpenConnections == 1 {
		return s.readAll(ctx, slices.Concat(groups...)...)
	}
	conns, err := s.snapshotConns(ctx, len(groups))
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var id string
	export := read{query: "SELECT pg_export_snapshot()", dest: scan(&id), row: func() error { return nil }}
	if err := readBatch(ctx, conns[0], []string{beginSnapshot}, []read{export}, nil); err != nil {
		return err
	}
	if !snapshotID.MatchString(id) {
		conns[0].ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return fmt.Errorf("unexpected snapshot identifier %q", id)
	}
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i := 1; i < len(groups); i++ {
		wg.Go(func() {
			errs[i] = readBatch(ctx, conns[i], []string{beginSnapshot, "SET TRANSACTION SNAPSHOT '" + id + "'"}, groups[i], []string{"COMMIT"})
		})
	}
	// the exporting transaction stays open until every other one has
	// imported its snapshot: they have all read when wg.Wait returns
	errs[0] = readBatch(ctx, conns[0], nil, groups[0], nil)
	wg.Wait()
	end := "COMMIT"
	if errors.Join(errs...) != nil {
		end = "ROLLBACK"
	}
	if _, err := conns[0].ExecContext(context.WithoutCancel(ctx), end); err != nil && errs[0] == nil {
		errs[0] = err
	}
	return errors.Join(errs...)
}

// snapshotID is what pg_export_snapshot returns, which SET TRANSACTION
// SNAPSHOT takes as a literal.
var snapshotID = regexp.MustCompile(`^[0-9A-Fa-f-]+$`)

// snapshotConns takes n connections from the pool for one parallel
// snapshot. One snapshot takes its connections at a time: snapshots that
// each held one connection while waiting for another could otherwise take
// the whole pool and wait for each other.
func (s *SQL) snapshotConns(ctx context.Context, n int) ([]*sql.Conn, error) {
	s.snapshotMu.Lock()
	defer s.snapshotMu.Unlock()
	conns := make([]*sql.Conn, 0, n)
	for range n {
		c, err := s.db.Conn(ctx)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
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
