package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// FoldResult says what one Fold did.
type FoldResult struct {
	// Entries is the number of journal entries (one per write
	// transaction) merged into the totals.
	Entries int64
	// Busy means another process was folding: this call did nothing.
	Busy bool
	// More means the journal held more entries than one fold takes
	// (foldBatch): fold again.
	More bool
}

// foldBatch bounds the journal entries one fold takes, so that a fold
// after a long pause stays a short transaction.
const foldBatch = 5000

// Fold merges the journal of running-total changes into the totals tables,
// in one transaction that takes the journal entries it merges: a reader
// sees either an entry or its sum in the totals, never both or neither,
// and a fold that fails or whose process dies changes nothing. One process
// folds at a time (a PostgreSQL advisory lock; SQLite's single writer); a
// call that finds another folding returns Busy at once. Writers never wait
// for a fold: they only insert journal entries, which a fold does not
// lock.
func (s *SQL) Fold(ctx context.Context) (FoldResult, error) {
	var res FoldResult
	err := s.inTx(ctx, func(t *tx) error {
		res = FoldResult{}
		var err error
		if s.dialect == Postgres {
			var got bool
			if err := t.queryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", foldLockKey).Scan(&got); err != nil {
				return err
			}
			if !got {
				res.Busy = true
				return nil
			}
			res.Entries, err = t.foldPostgres(ctx)
		} else {
			res.Entries, err = t.foldSQLite(ctx)
		}
		if err != nil {
			return fmt.Errorf("fold the running totals' journal: %w", err)
		}
		res.More = res.Entries == foldBatch
		return nil
	})
	if err != nil {
		return FoldResult{}, err
	}
	if err := s.vacuumJournal(ctx, res); err != nil {
		return res, fmt.Errorf("folded %d journal entries, but vacuuming the journal failed: %w", res.Entries, err)
	}
	return res, nil
}

// journalVacuumEvery is how many folded (deleted) journal entries a
// PostgreSQL folder lets accumulate before it vacuums the journal.
const journalVacuumEvery = 2000

// journalShrinkBytes is the size of the journal table above which the
// vacuum after a backlog gives empty pages back (vacuumJournal). Below it
// they are not worth the lock: between two folds, 5,000 writes a second
// fill about 1 MB, and while writers insert without pause the truncation
// does not get its lock at once; the vacuum then tries again for up to
// 5 s, and the folder waits for it (a fold of 8 writers' artifacts took
// 2.6 s so).
const journalShrinkBytes = 8 << 20

// vacuumJournal vacuums PostgreSQL's journal after a fold res, in two
// cases.
//
// Once journalVacuumEvery entries were folded since the last time. Every
// entry is inserted once and deleted once; autovacuum visits a database
// about once a minute, and until then the dead rows take up room that
// writers cannot reuse and every fold and snapshot scans: a benchmark left
// the journal at 46 MB for 280 live rows. Vacuuming the small table is a
// matter of milliseconds. TRUNCATE false: giving trailing pages back takes
// a lock that writers' inserts would wait for, for pages they soon fill
// again.
//
// And once a backlog is folded: a fold that left More (the server was
// down, or a correction journaled one entry per total — the dashboard's
// rollups of a 1M-request farm were 1.2M entries) followed by one that did
// not; and at a process's first fold, for a backlog folded before it
// started — when the table has grown past journalShrinkBytes. The table grew to hold the backlog and would otherwise stay that
// size, empty pages that every fold and every snapshot read through: 228
// MB, 70–245 ms of PostgreSQL time per scrape for one live row. This
// vacuum gives the trailing empty pages back. PostgreSQL takes the lock it
// needs for that only when it gets it at once, and lets go within 20 ms
// when another session asks for the table, so a writer waits at most that,
// once per backlog. SQLite reuses freed pages by itself.
func (s *SQL) vacuumJournal(ctx context.Context, res FoldResult) error {
	if s.dialect != Postgres || res.Busy {
		return nil
	}
	if res.More {
		s.backlog.Store(true)
	}
	shrink := !res.More && s.backlog.Load()
	if s.unvacuumed.Add(res.Entries) < journalVacuumEvery && !shrink {
		return nil
	}
	s.unvacuumed.Store(0)
	if shrink {
		var size int64
		if err := s.db.QueryRowContext(ctx, "SELECT pg_relation_size('metric_journal')").Scan(&size); err != nil {
			return err
		}
		if size <= journalShrinkBytes {
			shrink = false
			s.backlog.Store(false)
		}
	}
	options := "TRUNCATE false, SKIP_LOCKED"
	if shrink {
		options = "TRUNCATE true, SKIP_LOCKED"
	}
	if _, err := s.db.ExecContext(ctx, "VACUUM ("+options+") metric_journal"); err != nil {
		return err
	}
	if shrink {
		s.backlog.Store(false)
	}
	return nil
}

// FoldAll folds until the journal is empty (up to what other writers add
// meanwhile), waiting for another folder to finish when it finds one, and
// returns the number of journal entries it merged.
func (s *SQL) FoldAll(ctx context.Context) (int64, error) {
	var total int64
	for {
		res, err := s.Fold(ctx)
		if err != nil {
			return total, err
		}
		total += res.Entries
		if !res.Busy && !res.More {
			return total, nil
		}
		if res.Busy {
			select {
			case <-ctx.Done():
				return total, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// foldPostgres takes up to foldBatch journal entries, sums their changes
// per total and adds the sums to each ledger's table, in one statement,
// and returns how many entries it took.
func (t *tx) foldPostgres(ctx context.Context) (int64, error) {
	var q strings.Builder
	q.WriteString(`WITH taken AS (
			DELETE FROM metric_journal WHERE ctid = ANY(ARRAY(SELECT ctid FROM metric_journal LIMIT $1))
			RETURNING entries
		), changes AS (
			SELECT family, labels, SUM(value) AS value FROM (` + t.s.journalChanges("taken") + `) x GROUP BY family, labels
		)`)
	for i, lg := range t.s.ledgers {
		fmt.Fprintf(&q, `, merged%d AS (
			INSERT INTO %s (family, labels, value) SELECT family, labels, value FROM changes WHERE %s
			ON CONFLICT (family, labels) DO UPDATE SET value = %s.value + excluded.value
		)`, i, lg.table, t.s.journalCondition(lg), lg.table)
	}
	q.WriteString(" SELECT COUNT(*) FROM taken")
	var n int64
	if err := t.queryRow(ctx, q.String(), foldBatch).Scan(&n); err != nil {
		return 0, err
	}
	return n, t.fault(ctx, stepFold)
}

// foldSQLite does what foldPostgres does in SQLite's terms. The fold holds
// the single write lock, so nothing is added between its statements: the
// rowids up to last are the entries taken.
func (t *tx) foldSQLite(ctx context.Context) (int64, error) {
	var last sql.NullInt64
	if err := t.queryRow(ctx, "SELECT MAX(rowid) FROM (SELECT rowid FROM metric_journal ORDER BY rowid LIMIT $1)", foldBatch).Scan(&last); err != nil {
		return 0, err
	}
	if !last.Valid {
		return 0, nil
	}
	changes := t.s.journalChanges("(SELECT entries FROM metric_journal WHERE rowid <= $1)")
	for _, lg := range t.s.ledgers {
		if _, err := t.exec(ctx, `INSERT INTO `+lg.table+` (family, labels, value)
			SELECT family, labels, SUM(value) FROM (`+changes+`) x WHERE `+t.s.journalCondition(lg)+` GROUP BY family, labels
			ON CONFLICT (family, labels) DO UPDATE SET value = `+lg.table+`.value + excluded.value`, last.Int64); err != nil {
			return 0, err
		}
	}
	if err := t.fault(ctx, stepFold); err != nil {
		return 0, err
	}
	res, err := t.exec(ctx, "DELETE FROM metric_journal WHERE rowid <= $1", last.Int64)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Folder is what FoldEvery folds: a Store.
type Folder interface {
	Fold(ctx context.Context) (FoldResult, error)
}

// FoldEvery folds f every interval until ctx ends, folding again at once
// while a fold leaves More. observe, when not nil, hears the outcome and
// duration of every fold. A failed fold is retried at the next tick: the
// journal keeps every change until a fold succeeds, and readers count it
// meanwhile.
func FoldEvery(ctx context.Context, f Folder, interval time.Duration, observe func(FoldResult, time.Duration, error)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for ctx.Err() == nil {
			start := time.Now()
			res, err := f.Fold(ctx)
			if ctx.Err() != nil {
				return
			}
			if observe != nil {
				observe(res, time.Since(start), err)
			}
			if err != nil || !res.More {
				break
			}
		}
	}
}
