package store

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
)

// Recount computes every running total from the base tables with plain
// GROUP BY queries — what a scrape would cost without running totals. It is
// the reference that `kiln metrics recount` compares the totals with, and
// the baseline of the scrape benchmark. It reads one snapshot.
func (s *SQL) Recount(ctx context.Context) ([]Total, error) {
	var out []Total
	err := s.readTx(ctx, func(t *tx) error {
		var err error
		out, err = s.recount(ctx, t)
		return err
	})
	return out, err
}

func (s *SQL) recount(ctx context.Context, t *tx) ([]Total, error) {
	acc := map[totalKey]int64{}
	for _, q := range recountQueries() {
		if err := t.each(ctx, q.sql, nil, func(r *sql.Rows) error {
			return q.row(r, func(family string, l Labels, v int64) { acc[key(family, l)] += v })
		}); err != nil {
			return nil, fmt.Errorf("recount %s: %w", q.name, err)
		}
	}
	if err := s.recountWorkers(ctx, t, acc); err != nil {
		return nil, err
	}
	return totalsFrom(acc), nil
}

type recountQuery struct {
	name string
	sql  string
	row  func(r *sql.Rows, emit func(family string, l Labels, v int64)) error
}

// bucketCase is a SQL expression giving the "le" label of expr's bucket.
func bucketCase(expr string, bounds []int64) string {
	var b strings.Builder
	b.WriteString("CASE")
	for _, x := range bounds {
		fmt.Fprintf(&b, " WHEN %s <= %d THEN '%d'", expr, x, x)
	}
	fmt.Fprintf(&b, " ELSE '%s' END", InfBucket)
	return b.String()
}

// histogramQuery recounts a histogram kept by histo(): per label set and
// bucket, the number of observations and the sum of their values.
func histogramQuery(family, from string, labelCols []string, value string, bounds []int64) recountQuery {
	cols := strings.Join(labelCols, ", ")
	return recountQuery{
		name: family,
		sql: fmt.Sprintf("SELECT %s, %s AS le, COUNT(*), SUM(%s) FROM %s GROUP BY %s, %s",
			cols, bucketCase(value, bounds), value, from, cols, bucketCase(value, bounds)),
		row: func(r *sql.Rows, emit func(string, Labels, int64)) error {
			vals := make([]string, len(labelCols))
			dest := make([]any, 0, len(vals)+3)
			for i := range vals {
				dest = append(dest, &vals[i])
			}
			var le string
			var n, sum int64
			dest = append(dest, &le, &n, &sum)
			if err := r.Scan(dest...); err != nil {
				return err
			}
			l := Labels{}
			for i, c := range labelCols {
				l[labelName(c)] = vals[i]
			}
			emit(family+"_sum", l, sum)
			l["le"] = le
			emit(family, l, n)
			return nil
		},
	}
}

// labelName turns "w.scope_id" into "scope_id".
func labelName(col string) string {
	if i := strings.LastIndexByte(col, ' '); i >= 0 {
		col = col[i+1:]
	}
	if i := strings.LastIndexByte(col, '.'); i >= 0 {
		col = col[i+1:]
	}
	return col
}

// countQuery recounts a plain count family; bool columns become "1"/"0".
func countQuery(family, sqlText string, labels []string, bools map[string]bool) recountQuery {
	return recountQuery{
		name: family,
		sql:  sqlText,
		row: func(r *sql.Rows, emit func(string, Labels, int64)) error {
			raw := make([]sql.NullString, len(labels))
			dest := make([]any, 0, len(labels)+1)
			for i := range raw {
				dest = append(dest, &raw[i])
			}
			var n int64
			dest = append(dest, &n)
			if err := r.Scan(dest...); err != nil {
				return err
			}
			l := Labels{}
			for i, name := range labels {
				if !raw[i].Valid {
					continue // label absent for this series
				}
				v := raw[i].String
				if bools[name] {
					v = boolLabel(v == "1" || v == "true" || v == "t")
				}
				l[name] = v
			}
			emit(family, l, n)
			return nil
		},
	}
}

func recountQueries() []recountQuery {
	b := func(names ...string) map[string]bool {
		m := map[string]bool{}
		for _, n := range names {
			m[n] = true
		}
		return m
	}
	art := "artifacts a JOIN workspaces w ON w.id = a.workspace_id"
	return []recountQuery{
		countQuery("workspaces", `SELECT CASE WHEN public THEN 0 ELSE 1 END, CASE WHEN expiration_delay IS NULL THEN 0 ELSE 1 END,
			CAST(scope_id AS TEXT), COUNT(*) FROM workspaces GROUP BY 1, 2, 3`, []string{"private", "expires", "scope_id"}, b("private", "expires")),
		countQuery("users", `SELECT CASE WHEN active THEN 1 ELSE 0 END, COUNT(*) FROM users WHERE NOT is_system GROUP BY 1`,
			[]string{"active"}, b("active")),
		countQuery("user_identities", `SELECT CASE WHEN u.active THEN 1 ELSE 0 END, i.issuer, COUNT(*) FROM identities i
			JOIN users u ON u.id = i.user_id WHERE NOT u.is_system GROUP BY 1, 2`, []string{"active", "issuer"}, b("active")),
		countQuery("groups", `SELECT CASE WHEN ephemeral THEN 1 ELSE 0 END, CAST(scope_id AS TEXT), COUNT(*) FROM user_groups GROUP BY 1, 2`,
			[]string{"ephemeral", "scope_id"}, b("ephemeral")),
		countQuery("tokens", `SELECT CASE WHEN enabled THEN 1 ELSE 0 END, CASE WHEN user_id IS NULL THEN 0 ELSE 1 END,
			CASE WHEN worker_id IS NULL THEN 0 ELSE 1 END, COUNT(*) FROM tokens GROUP BY 1, 2, 3`,
			[]string{"enabled", "user", "worker"}, b("enabled", "user", "worker")),
		countQuery("assets", `SELECT a.category, CAST(w.scope_id AS TEXT), COUNT(*) FROM assets a JOIN workspaces w ON w.id = a.workspace_id
			GROUP BY 1, 2`, []string{"category", "scope_id"}, nil),
		countQuery("collections", `SELECT c.category, CAST(w.scope_id AS TEXT), COUNT(*) FROM collections c JOIN workspaces w ON w.id = c.workspace_id
			GROUP BY 1, 2`, []string{"category", "scope_id"}, nil),
		histogramQuery("collection_sizes", `(SELECT c.category, CAST(w.scope_id AS TEXT) AS scope_id,
			(SELECT COUNT(*) FROM collection_items i WHERE i.collection_id = c.id) AS n
			FROM collections c JOIN workspaces w ON w.id = c.workspace_id) x`, []string{"category", "scope_id"}, "n", CollectionSizeBuckets),
		countQuery("workflow_templates", `SELECT t.task_name, CAST(w.scope_id AS TEXT), COUNT(*) FROM workflow_templates t
			JOIN workspaces w ON w.id = t.workspace_id GROUP BY 1, 2`, []string{"task_name", "scope_id"}, nil),
		countQuery("artifacts", `SELECT a.category, CAST(w.scope_id AS TEXT), COUNT(*) FROM `+art+` GROUP BY 1, 2`,
			[]string{"category", "scope_id"}, nil),
		countQuery("artifact_file_size", `SELECT a.category, CAST(w.scope_id AS TEXT), SUM(f.size) FROM `+art+`
			JOIN artifact_files f ON f.artifact_id = a.id GROUP BY 1, 2`, []string{"category", "scope_id"}, nil),
		histogramQuery("artifact_file_counts", `(SELECT a.category, CAST(w.scope_id AS TEXT) AS scope_id,
			(SELECT COUNT(*) FROM artifact_files f WHERE f.artifact_id = a.id) AS n FROM `+art+`) x`,
			[]string{"category", "scope_id"}, "n", ArtifactFileCountBuckets),
		histogramQuery("artifact_file_sizes", `(SELECT a.category, CAST(w.scope_id AS TEXT) AS scope_id, f.size AS n FROM `+art+`
			JOIN artifact_files f ON f.artifact_id = a.id) x`, []string{"category", "scope_id"}, "n", ArtifactFileSizeBuckets),
		countQuery("work_requests", `SELECT r.task_type, r.task_name, CAST(w.scope_id AS TEXT), r.status,
			CASE WHEN r.task_type = 'Worker' THEN r.data->>'host_architecture' END,
			CASE WHEN r.task_type = 'Worker' THEN COALESCE(NULLIF(r.data->>'backend', ''), 'auto') END, COUNT(*)
			FROM work_requests r JOIN workspaces w ON w.id = r.workspace_id GROUP BY 1, 2, 3, 4, 5, 6`,
			[]string{"task_type", "task_name", "scope_id", "status", "host_architecture", "backend"}, nil),
		histogramQuery("task_execution_times", `(SELECT r.task_type, r.task_name, CAST(w.scope_id AS TEXT) AS scope_id, r.execution_time AS n
			FROM work_requests r JOIN workspaces w ON w.id = r.workspace_id
			WHERE r.status = 'completed' AND r.execution_time IS NOT NULL) x`,
			[]string{"task_type", "task_name", "scope_id"}, "n", TaskExecutionBuckets),
	}
}

// recountWorkers recounts the workers family. Architectures are a sorted
// list, which SQL cannot join portably, so the (small) workers table is read
// row by row.
func (s *SQL) recountWorkers(ctx context.Context, t *tx, acc map[totalKey]int64) error {
	busy := map[int64]bool{}
	if err := t.each(ctx, "SELECT DISTINCT worker_id FROM work_requests WHERE status = 'running' AND worker_id IS NOT NULL", nil,
		func(r *sql.Rows) error {
			var id int64
			err := r.Scan(&id)
			busy[id] = true
			return err
		}); err != nil {
		return err
	}
	tb := s.workers()
	return t.each(ctx, tb.selectSQL(), nil, func(r *sql.Rows) error {
		w, err := tb.def.scan(r)
		if err != nil {
			return err
		}
		w.Busy = busy[w.ID]
		acc[key("workers", workerLabels(w))]++
		return nil
	})
}

func totalsFrom(acc map[totalKey]int64) []Total {
	out := make([]Total, 0, len(acc))
	for k, v := range acc {
		out = append(out, Total{Family: k.family, Labels: decodeLabels(k.labels), Value: v})
	}
	sortTotals(out)
	return out
}

func sortTotals(ts []Total) {
	sort.Slice(ts, func(i, j int) bool {
		if ts[i].Family != ts[j].Family {
			return ts[i].Family < ts[j].Family
		}
		return key(ts[i].Family, ts[i].Labels).labels < key(ts[j].Family, ts[j].Labels).labels
	})
}

// Difference is a running total that disagrees with its recount.
type Difference struct {
	Family  string
	Labels  Labels
	Kept    int64 // the running total
	Counted int64 // the recount from base tables
}

func (d Difference) String() string {
	return fmt.Sprintf("%s%s: running total %d, recount %d", d.Family, key(d.Family, d.Labels).labels, d.Kept, d.Counted)
}

// CheckTotals compares the running totals (and each file store's
// total_size, and the user activity the activity histograms read: see
// checkActivity) with a recount and returns every difference. The totals
// are read as a scrape reads them, journal entries not yet folded
// included, in the recount's snapshot. A label set kept at 0 that the
// recount no longer sees is not a difference.
func (s *SQL) CheckTotals(ctx context.Context) ([]Difference, error) {
	var diffs []Difference
	err := s.readTx(ctx, func(t *tx) error {
		var err error
		diffs, err = s.checkTotals(ctx, t)
		return err
	})
	return diffs, err
}

func (s *SQL) checkTotals(ctx context.Context, t *tx) ([]Difference, error) {
	counted, err := s.recount(ctx, t)
	if err != nil {
		return nil, err
	}
	// the running totals as a reader sees them: folded plus journaled
	totals, err := t.ledgerTotals(ctx, s.metricsLedger())
	if err != nil {
		return nil, err
	}
	kept := make(map[totalKey]int64, len(totals))
	for _, tot := range totals {
		kept[key(tot.Family, tot.Labels)] = tot.Value
	}
	want := map[totalKey]int64{}
	for _, c := range counted {
		want[key(c.Family, c.Labels)] = c.Value
	}
	var diffs []Difference
	for k, v := range want {
		if kept[k] != v {
			diffs = append(diffs, Difference{k.family, decodeLabels(k.labels), kept[k], v})
		}
	}
	for k, v := range kept {
		if _, ok := want[k]; !ok && v != 0 {
			diffs = append(diffs, Difference{k.family, decodeLabels(k.labels), v, 0})
		}
	}
	if err := t.each(ctx, `SELECT s.name, s.total_size, COALESCE((SELECT SUM(size) FROM files f WHERE f.file_store_id = s.id), 0)
		FROM file_stores s`, nil, func(r *sql.Rows) error {
		var name string
		var have, sum int64
		if err := r.Scan(&name, &have, &sum); err != nil {
			return err
		}
		if have != sum {
			diffs = append(diffs, Difference{"file_stores.total_size", Labels{"name": name}, have, sum})
		}
		return nil
	}); err != nil {
		return nil, err
	}
	activity, err := s.checkActivity(ctx, t)
	if err != nil {
		return nil, err
	}
	diffs = append(diffs, activity...)
	sort.Slice(diffs, func(i, j int) bool { return diffs[i].String() < diffs[j].String() })
	return diffs, nil
}

// FixTotals corrects every running total (and file store total_size) that
// differs from the recount, in one transaction, and returns what it fixed.
// The corrections are journaled like any change (Fold merges them). The
// transaction reads one snapshot (REPEATABLE READ on PostgreSQL; SQLite's
// writer is alone) and corrects by difference, so writers need not stop:
// what they commit meanwhile adds to the corrected figures.
func (s *SQL) FixTotals(ctx context.Context) ([]Difference, error) {
	var diffs []Difference
	err := s.inTxAt(ctx, repeatableRead, func(t *tx) error {
		var err error
		diffs, err = s.checkTotals(ctx, t)
		if err != nil {
			return err
		}
		for _, d := range diffs {
			if fixed, err := t.fixActivity(ctx, d); fixed || err != nil {
				if err != nil {
					return err
				}
				continue
			}
			if d.Family == "file_stores.total_size" {
				if _, err := t.exec(ctx, "UPDATE file_stores SET total_size = total_size + $1 WHERE name = $2", d.Counted-d.Kept, d.Labels["name"]); err != nil {
					return err
				}
				continue
			}
			t.add(key(d.Family, d.Labels), d.Counted-d.Kept)
		}
		return nil
	})
	return diffs, err
}

func decodeLabels(s string) Labels {
	l := Labels{}
	// keys and values come from encoding/json, so this cannot fail
	_ = jsonUnmarshal([]byte(s), &l)
	return l
}
