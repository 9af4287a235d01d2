package bench

import (
	"context"
	"database/sql"
	_ "embed"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/store"
)

// referenceSQL is the reference design's scrape: four of Debusine's GROUP
// BY queries (artifact_file_size, artifacts, work_requests, user_activity)
// translated to kiln's schema, as the project's benchmark anchors give
// them. An uncached kiln scrape is compared with their sum.
//
//go:embed reference-groupby.sql
var referenceSQL string

// referenceQuery is one query of referenceSQL.
type referenceQuery struct {
	name string // the comment line before it
	sql  string
}

// referenceQueries reads the queries of referenceSQL for a dialect: the
// file is written for PostgreSQL (psql's \timing line and comments are
// skipped); on SQLite, its one PostgreSQL-only expression, the current
// time in microseconds, is written the SQLite way.
func referenceQueries(d store.Dialect) ([]referenceQuery, error) {
	var out []referenceQuery
	name := ""
	for _, line := range strings.Split(referenceSQL, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, `\`):
		case strings.HasPrefix(line, "--"):
			name = strings.TrimSpace(strings.TrimPrefix(line, "--"))
		default:
			q := strings.TrimSuffix(line, ";")
			if d == store.SQLite {
				q = strings.ReplaceAll(q, "(extract(epoch from now())*1e6)::bigint", "CAST(unixepoch('now') * 1000000 AS INTEGER)")
			}
			out = append(out, referenceQuery{name: name, sql: q})
		}
	}
	if len(out) != 4 {
		return nil, fmt.Errorf("reference-groupby.sql: %d queries, want 4", len(out))
	}
	return out, nil
}

// runReference runs the reference queries one after the other, reading
// every row as psql would, and returns the time they took together.
func runReference(ctx context.Context, db *sql.DB, qs []referenceQuery) (time.Duration, error) {
	start := time.Now()
	for _, q := range qs {
		rows, err := db.QueryContext(ctx, q.sql)
		if err != nil {
			return 0, fmt.Errorf("reference query %q: %w", q.name, err)
		}
		cols, err := rows.ColumnTypes()
		if err != nil {
			rows.Close()
			return 0, err
		}
		dest := make([]any, len(cols))
		for i := range dest {
			dest[i] = new(sql.RawBytes)
		}
		for rows.Next() {
			if err := rows.Scan(dest...); err != nil {
				rows.Close()
				return 0, fmt.Errorf("reference query %q: %w", q.name, err)
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return 0, fmt.Errorf("reference query %q: %w", q.name, err)
		}
	}
	return time.Since(start), nil
}
