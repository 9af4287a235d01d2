package store

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// The rollups are recounted from the work requests in SQL alone, labels
// included: a farm holds millions of them (about one per request and day),
// more than a recount should hold in memory, and an upgrade fills them
// from the farm's history the same way (BackfillStatistics). The labels
// are built as canonicalLabels writes them — keys sorted, plain ASCII
// values that JSON leaves as they are — so that a recounted key and a
// kept one compare as text; TestStatisticsRecount holds the two to the
// same keys.

// recountStatisticsSQL is a query of (family, labels, value) with every
// rollup as the work requests give it now.
func recountStatisticsSQL() string {
	str := func(col string) string { return "CAST(" + col + " AS TEXT)" }
	outcome := "CASE WHEN r.status = 'aborted' THEN 'aborted' ELSE r.result END"
	task := `'","task_name":"' || r.task_name || '","task_type":"' || r.task_type || '","workspace_id":"' || ` + str("r.workspace_id") + ` || '"}'`
	period := func(seconds int) string {
		return str("r.completed_at / " + strconv.Itoa(seconds*1000000) + " * " + strconv.Itoa(seconds))
	}
	finished := " FROM work_requests r WHERE r.status IN ('completed', 'aborted') AND r.completed_at IS NOT NULL"
	wait := "CASE WHEN r.started_at < r.created_at THEN 0 ELSE r.started_at - r.created_at END"
	queries := []string{
		`SELECT '` + runsByHour + `' AS family, '{"period":"' || ` + period(hourSeconds) + ` || '","result":"' || ` + outcome + ` || ` + task +
			` AS labels` + finished,
		`SELECT '` + runsByDay + `', '{' || CASE WHEN r.execution_time IS NULL THEN '' ELSE '"le":"' || ` +
			bucketCase("r.execution_time", StatisticsBuckets) + ` || '",' END || '"period":"' || ` + period(daySeconds) +
			` || '","result":"' || ` + outcome + ` || ` + task + finished,
		`SELECT '` + waitsByDay + `', '{"le":"' || ` + bucketCase(wait, StatisticsBuckets) + ` || '","period":"' || ` + period(daySeconds) +
			` || ` + task + finished + ` AND r.started_at IS NOT NULL`,
		`SELECT '` + requestsByStatus + `', '{"status":"' || r.status || '","workspace_id":"' || ` + str("r.workspace_id") + ` || '"}'` +
			` FROM work_requests r`,
	}
	return "SELECT family, labels, COUNT(*) AS value FROM (" + strings.Join(queries, " UNION ALL ") + ") c GROUP BY family, labels"
}

// statisticsDiffSQL is a query of (f, l, kept, counted) — family,
// labels, value kept (folded plus journaled), value recounted — for every
// rollup whose two values differ. Kept and counted rows are put together
// and grouped, rather than joined: SQLite has no hash join, and a join of
// two unindexed sets of a million rows would compare every pair.
func (s *SQL) statisticsDiffSQL() string {
	return "SELECT family AS f, labels AS l, SUM(kept) AS kept, SUM(counted) AS counted FROM (" +
		"SELECT family, labels, 0 AS kept, value AS counted FROM (" + recountStatisticsSQL() + ") c" +
		" UNION ALL SELECT family, labels, value, 0 FROM statistics_totals" +
		" UNION ALL SELECT family, labels, value, 0 FROM (" + s.statisticsJournal() + ") j" +
		") d GROUP BY family, labels HAVING SUM(kept) <> SUM(counted)"
}

// journalEntry is the SQL expression of a journal entry of one change:
// the JSON array [[family, labels, value]] that writers journal.
func (s *SQL) journalEntry(family, labels, value string) string {
	if s.dialect == Postgres {
		return "json_build_array(json_build_array(" + family + ", " + labels + ", " + value + "))::text"
	}
	return "json_array(json_array(" + family + ", " + labels + ", " + value + "))"
}

// CheckStatistics compares the rollups — as readers see them, journal
// included, in one snapshot — with their recount from the work requests.
// It lists at most limit differences and counts them all.
func (s *SQL) CheckStatistics(ctx context.Context, limit int) ([]Difference, int64, error) {
	var diffs []Difference
	var n int64
	err := s.readTx(ctx, func(t *tx) error {
		diffs, n = nil, 0
		return t.each(ctx, s.statisticsDiffSQL()+" ORDER BY 1, 2", nil, func(r *sql.Rows) error {
			var d Difference
			var labels string
			if err := r.Scan(&d.Family, &labels, &d.Kept, &d.Counted); err != nil {
				return err
			}
			if n++; int(n) <= limit {
				d.Labels = decodeLabels(labels)
				diffs = append(diffs, d)
			}
			return nil
		})
	})
	return diffs, n, err
}

// FixStatistics corrects every rollup that differs from its recount by
// journaling the difference — one INSERT … SELECT, one journal entry per
// correction, however many there are; a fold then merges them — and
// returns how many it corrected.
// Writers need not stop: the statement reads one snapshot, and what they
// commit meanwhile adds to the corrected figures. Corrections run one at a
// time (an advisory lock on PostgreSQL, the single writer on SQLite), and
// each statement sees what the one before committed.
func (s *SQL) FixStatistics(ctx context.Context) (int64, error) {
	var n int64
	err := s.inTx(ctx, func(t *tx) error {
		if s.dialect == Postgres {
			if _, err := t.exec(ctx, "SELECT pg_advisory_xact_lock($1)", statisticsLockKey); err != nil {
				return err
			}
		}
		res, err := t.exec(ctx, "INSERT INTO metric_journal (entries) SELECT "+s.journalEntry("f", "l", "counted - kept")+
			" FROM ("+s.statisticsDiffSQL()+") d")
		if err != nil {
			return fmt.Errorf("correct the rollups: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// BackfillStatistics fills the rollups from the farm's history when they
// are empty and the farm is not: a database upgraded to the rollups, whose
// work requests finished before. It does nothing otherwise, so a server
// may call it at every start.
func (s *SQL) BackfillStatistics(ctx context.Context) (int64, error) {
	var ledger, work bool
	err := s.readTx(ctx, func(t *tx) error {
		var err error
		if ledger, err = t.exists(ctx, "SELECT 1 FROM statistics_totals LIMIT 1"); err != nil || ledger {
			return err
		}
		if ledger, err = t.exists(ctx, "SELECT 1 FROM ("+s.statisticsJournal()+") j LIMIT 1"); err != nil || ledger {
			return err
		}
		work, err = t.exists(ctx, "SELECT 1 FROM work_requests LIMIT 1")
		return err
	})
	if err != nil || ledger || !work {
		return 0, err
	}
	return s.FixStatistics(ctx)
}
