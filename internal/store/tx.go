package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// tx is one database transaction, with the running-total changes that
// must commit with it.
type tx struct {
	s *SQL
	// sqltx carries SQLite writes and PostgreSQL reads; conn is a pinned
	// connection for PostgreSQL writes (which manage BEGIN and COMMIT
	// themselves, see commitPostgres) and SQLite reads.
	sqltx  *sql.Tx
	conn   *sql.Conn
	totals map[totalKey]int64
	after  []func()
	scopes map[int64]int64 // workspace id → scope id, read once per transaction
	// itemWrite lets collection item changes update the otherwise
	// read-only item_count.
	itemWrite bool
	// released collects content that left its file store in this
	// transaction.
	released []Blob
	// outbox collects the notifications of the requests this
	// transaction finished, written at commit (KeepNotifications).
	outbox []outboxRow
}

// isolation is the isolation level of a write transaction on PostgreSQL.
// SQLite writers hold the database's single write lock from BEGIN
// (IMMEDIATE), which is serializable whatever is asked.
type isolation int

const (
	// readCommitted is PostgreSQL's default, right for writes that lock
	// the rows they rewrite.
	readCommitted isolation = iota
	// repeatableRead gives a write one snapshot of every table it reads:
	// for corrections computed from many tables (FixTotals).
	repeatableRead
)

// inTx runs fn in one transaction and commits it together with the
// running-total changes fn recorded. Any error rolls everything back.
func (s *SQL) inTx(ctx context.Context, fn func(*tx) error) error {
	return s.inTxAt(ctx, readCommitted, fn)
}

// inTxAt is inTx at an isolation level. Serialization failures and
// deadlocks are retried a few times.
func (s *SQL) inTxAt(ctx context.Context, iso isolation, fn func(*tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.tryTx(ctx, iso, fn)
		if err != nil && attempt < 5 && isRetryable(err) {
			time.Sleep(time.Duration(attempt+1) * 20 * time.Millisecond)
			continue
		}
		return err
	}
}

func (s *SQL) tryTx(ctx context.Context, iso isolation, fn func(*tx) error) error {
	t := &tx{s: s, totals: map[totalKey]int64{}}
	if s.dialect == Postgres {
		conn, err := s.beginPostgres(ctx, iso)
		if err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
		defer conn.Close()
		t.conn = conn
	} else {
		sqltx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
		t.sqltx = sqltx
	}
	if err := fn(t); err != nil {
		t.rollback(ctx)
		return err
	}
	var err error
	if s.dialect == Postgres {
		err = t.commitPostgres(ctx)
	} else {
		err = t.commitSQLite(ctx)
	}
	if err != nil {
		return err
	}
	for _, f := range t.after {
		f()
	}
	return nil
}

// beginPostgres opens a transaction on a connection of its own. Writes
// issue BEGIN themselves rather than through database/sql's Tx so that the
// journal of total changes can travel with the COMMIT (commitPostgres).
// A connection found broken at BEGIN is replaced, as database/sql would.
func (s *SQL) beginPostgres(ctx context.Context, iso isolation) (*sql.Conn, error) {
	begin := "BEGIN"
	if iso == repeatableRead {
		begin = "BEGIN ISOLATION LEVEL REPEATABLE READ"
	}
	for attempt := 0; ; attempt++ {
		conn, err := s.db.Conn(ctx)
		if err != nil {
			return nil, err
		}
		if _, err = conn.ExecContext(ctx, begin); err == nil {
			return conn, nil
		}
		conn.Close()
		if !errors.Is(err, driver.ErrBadConn) || attempt == 2 {
			return nil, err
		}
	}
}

// rollback abandons the transaction; a connection that cannot roll back is
// discarded by the pool (the driver refuses to reuse one still in a
// transaction), so its error adds nothing.
func (t *tx) rollback(ctx context.Context) {
	if t.sqltx != nil {
		_ = t.sqltx.Rollback()
		return
	}
	_, _ = t.conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
}

// commitSQLite writes the outbox's notifications and the journal as the
// transaction's last statements and commits. SQLite runs in-process: a
// statement costs no round trip.
func (t *tx) commitSQLite(ctx context.Context) error {
	if err := t.writeOutbox(ctx); err != nil {
		t.rollback(ctx)
		return err
	}
	if err := t.writeJournal(ctx); err != nil {
		t.rollback(ctx)
		return err
	}
	if err := t.fault(ctx, stepCommit); err != nil {
		t.rollback(ctx)
		return err
	}
	if err := t.sqltx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// errCommitRolledBack is PostgreSQL's answer to COMMIT in a transaction
// that an earlier, ignored error aborted.
var errCommitRolledBack = errors.New("commit: the transaction was rolled back by an earlier error")

// commitPostgres sends the outbox's notifications, the journal insert and
// COMMIT in one pipelined batch: one round trip, as a bare COMMIT would
// be, so keeping totals and notifications adds no wait to a writer, and the journal row locks nothing that another
// writer needs. An error anywhere in the batch skips the rest of it
// (PostgreSQL's pipeline semantics) and rolls the transaction back.
func (t *tx) commitPostgres(ctx context.Context) error {
	entry := t.journalEntry()
	err := t.conn.Raw(func(dc any) error {
		c := dc.(*stdlib.Conn).Conn()
		b := &pgx.Batch{}
		if len(t.outbox) > 0 {
			now := toMicros(t.s.now())
			for _, r := range t.outbox {
				b.Queue(notificationInsert, r.workRequest, r.payload, now)
			}
		}
		if entry != "" {
			if t.s.faultAt(stepJournal) {
				b.Queue(t.s.faultSQL(stepJournal))
			} else {
				b.Queue(journalInsert, entry)
			}
		}
		if t.s.faultAt(stepCommit) {
			b.Queue(t.s.faultSQL(stepCommit))
		}
		b.Queue("COMMIT")
		br := c.SendBatch(ctx, b)
		var err error
		for i := 0; i < b.Len() && err == nil; i++ {
			var tag pgconn.CommandTag
			tag, err = br.Exec()
			if err == nil && i == b.Len()-1 && tag.String() != "COMMIT" {
				err = errCommitRolledBack
			}
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil && c.PgConn().TxStatus() != 'I' {
			// still in the (aborted) transaction: end it, so the
			// connection can serve again
			_, _ = c.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// readTx runs fn in a read-only transaction that sees one consistent
// snapshot (REPEATABLE READ on PostgreSQL; a read transaction on SQLite).
func (s *SQL) readTx(ctx context.Context, fn func(*tx) error) error {
	if s.dialect == SQLite {
		// _txlock=immediate would take the write lock; a deferred
		// transaction is a snapshot once its first SELECT runs.
		conn, err := s.db.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, "BEGIN DEFERRED"); err != nil {
			return err
		}
		ferr := fn(&tx{s: s, conn: conn})
		_, rerr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		if ferr != nil {
			return ferr
		}
		return rerr
	}
	sqltx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return err
	}
	defer sqltx.Rollback()
	return fn(&tx{s: s, sqltx: sqltx})
}

// Steps of a write transaction and of a fold at which tests inject a
// database error (SQL.hook).
const (
	// stepJournal is the journal write, the transaction's last statement.
	stepJournal = "journal"
	// stepCommit is after the journal write, just before COMMIT.
	stepCommit = "commit"
	// stepFold is inside a fold, after the totals were merged and the
	// journal rows taken, before its COMMIT.
	stepFold = "fold"
)

// faultAt says whether a test asked for step to fail (never in
// production: hook is only set by the package's tests).
func (s *SQL) faultAt(step string) bool { return s.hook != nil && s.hook(step) }

// faultSQL is a statement that fails in the database when executed, naming
// step: injected faults take the same path as real errors (on PostgreSQL
// the statement parses, so in a pipeline it fails at its own turn).
func (s *SQL) faultSQL(step string) string {
	if s.dialect == Postgres {
		return "DO $$BEGIN RAISE EXCEPTION 'kiln: fault injected at step %', '" + step + "'; END$$"
	}
	return `SELECT * FROM "kiln: fault injected at step ` + step + `"`
}

// fault executes the failing statement of step when a test asked for it.
func (t *tx) fault(ctx context.Context, step string) error {
	if !t.s.faultAt(step) {
		return nil
	}
	return t.execFault(ctx, step)
}

func (t *tx) execFault(ctx context.Context, step string) error {
	if _, err := t.exec(ctx, t.s.faultSQL(step)); err != nil {
		return err
	}
	return fmt.Errorf("the fault injected at step %s did not fail", step)
}

type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (t *tx) q() querier {
	if t.conn != nil {
		return t.conn
	}
	return t.sqltx
}

// exec and query refuse a NUL character in any argument (checkArgs), so
// that a statement never reaches PostgreSQL with one.
func (t *tx) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if err := checkArgs(args); err != nil {
		return nil, err
	}
	return t.q().ExecContext(ctx, q, args...)
}

func (t *tx) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if err := checkArgs(args); err != nil {
		return nil, err
	}
	return t.q().QueryContext(ctx, q, args...)
}

func (t *tx) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return t.q().QueryRowContext(ctx, q, args...)
}

// forUpdate is the row-lock suffix of a SELECT that the transaction will
// rewrite: PostgreSQL locks the rows, SQLite already holds the write lock.
func (t *tx) forUpdate() string {
	if t.s.dialect == Postgres {
		return " FOR UPDATE"
	}
	return ""
}
