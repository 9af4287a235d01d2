package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect names the SQL database behind a store.
type Dialect string

// The two databases kiln runs on.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// SQL is the store implementation shared by both databases. Queries are
// written once with $N placeholders, which both drivers bind by position.
type SQL struct {
	db      *sql.DB
	dialect Dialect
	now     func() time.Time
	defs    defs
	// finishHooks hear about finished work requests (OnFinish),
	// pendingHooks about requests that became pending (OnPending).
	finishHooks  []FinishHook
	pendingHooks []PendingHook
	// notifications, when set, makes finishing a work request write its
	// notification to the outbox (KeepNotifications).
	notifications NotificationEncoder
	// noTotals turns running totals off (SkipTotalsForBenchmark).
	noTotals atomic.Bool
	// ledgers are the tables of running totals that Fold feeds.
	ledgers []ledger
	// unvacuumed counts the journal entries folded since this process
	// last vacuumed the journal (vacuumJournal).
	unvacuumed atomic.Int64
	// backlog says that the journal may hold empty pages a shrink would
	// give back (vacuumJournal): a fold of this process left More since
	// the last shrink, or the process has not shrunk it yet (what happened
	// before it started, it cannot tell).
	backlog atomic.Bool
	// labels decodes each stored label set once (ledgerRead).
	labels labelCache
	// totalsHint is the number of totals the last ledger read returned,
	// so that the next one allocates its slice once.
	totalsHint atomic.Int64
	// hints are the sizes of the last snapshot's other lists.
	hints atomic.Pointer[snapshotHints]
	// snapshotMu lets one parallel snapshot at a time take its
	// connections (snapshotConns).
	snapshotMu sync.Mutex
	// journalPrepared is SQLite's prepared journal insert (journalStmt).
	stmtMu          sync.Mutex
	journalPrepared *sql.Stmt
	// hook is set by the package's tests only: it turns a step of a
	// transaction or fold into a database error when it returns true, or
	// blocks it.
	hook func(step string) bool
}

// Open connects to dsn — a postgres:// URL, or a SQLite file path (optionally
// prefixed with sqlite:// or file:) — and brings its schema up to date.
func Open(ctx context.Context, dsn string) (*SQL, error) {
	s := &SQL{now: time.Now, defs: newDefs(), ledgers: append(defaultLedgers(), statisticsLedger())}
	s.backlog.Store(true)
	var err error
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		s.dialect = Postgres
		s.db, err = sql.Open("pgx", dsn)
		if err == nil {
			s.db.SetMaxOpenConns(20)
			s.db.SetMaxIdleConns(10)
			s.db.SetConnMaxIdleTime(5 * time.Minute)
		}
	} else {
		s.dialect = SQLite
		s.db, err = sql.Open("sqlite", sqliteDSN(dsn))
		if err == nil {
			// SQLite has one writer; transactions start IMMEDIATE (see
			// sqliteDSN) so writers queue on busy_timeout instead of
			// failing on upgrade from reader to writer.
			s.db.SetMaxOpenConns(8)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := s.connect(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("connect to %s database: %w", s.dialect, err)
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// connect makes the first connection. On SQLite its pragmas switch a new
// database to WAL, which needs a lock that another process opening the
// same file at once (a replica migrating it, kiln expire) may hold; SQLite
// answers that with SQLITE_BUSY at once rather than through busy_timeout,
// so connect tries again for as long as busy_timeout would have waited.
func (s *SQL) connect(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.db.PingContext(ctx)
		if err == nil || s.dialect != SQLite || !isRetryable(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func sqliteDSN(dsn string) string {
	p := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite://"), "file:")
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	return "file:" + p + "?" + q.Encode()
}

// Dialect says which database the store runs on.
func (s *SQL) Dialect() Dialect { return s.dialect }

// DB exposes the connection pool, for pool statistics and for the recount
// baseline; writes must go through the store's methods.
func (s *SQL) DB() *sql.DB { return s.db }

// Close releases the prepared statement and the connection pool.
func (s *SQL) Close() error {
	s.stmtMu.Lock()
	if s.journalPrepared != nil {
		s.journalPrepared.Close()
		s.journalPrepared = nil
	}
	s.stmtMu.Unlock()
	return s.db.Close()
}

// Ping checks that the database answers, for readiness probes.
func (s *SQL) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// SkipTotalsForBenchmark stops (on) or resumes keeping running totals. It
// exists for `kiln dev bench-writes` alone, which measures what the totals
// cost a writer on a throwaway database: totals not kept while it is on stay
// wrong until `kiln metrics recount --fix`.
func (s *SQL) SkipTotalsForBenchmark(on bool) { s.noTotals.Store(on) }

// SetClock replaces the store's clock, for tests of time-dependent figures.
func (s *SQL) SetClock(now func() time.Time) { s.now = now }

func isRetryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// serialization_failure, deadlock_detected
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		c := sqErr.Code() & 0xff
		return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
	}
	return false
}

// constraintKind classifies a database constraint violation, so that a race
// past the store's own checks still yields a clear client error.
func constraintKind(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505":
			return "unique"
		case "23503":
			return "foreign"
		case "23514", "23502":
			return "check"
		}
		return ""
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		switch sqErr.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return "unique"
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return "foreign"
		case sqlite3.SQLITE_CONSTRAINT_CHECK, sqlite3.SQLITE_CONSTRAINT_NOTNULL:
			return "check"
		}
	}
	return ""
}

// errNoRows is database/sql's empty-result error.
var errNoRows = sql.ErrNoRows

func toMicros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func nullMicros(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMicro()
}

func timePtr(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}

func int64Ptr(v sql.NullInt64) *int64 {
	if !v.Valid {
		return nil
	}
	x := v.Int64
	return &x
}

func nullInt(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}
