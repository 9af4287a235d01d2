package store

import (
	"context"
	"database/sql"
	"io/fs"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestMigrationFillsClaimKeys upgrades a database of kiln before the claim
// indexes (schema version 2) holding requests of every kind, and checks
// that the migration fills host_architecture and backend from their data
// and that they are then claimed through the new indexes.
func TestMigrationFillsClaimKeys(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := unmigrated(t, dsn)
		if err := s.migrateFrom(ctx, migrationsUpTo(t, 2)); err != nil {
			t.Fatal(err)
		}
		var scope, ws int64
		if err := s.db.QueryRowContext(ctx, "INSERT INTO scopes (name, created_at) VALUES ('old', 1) RETURNING id").Scan(&scope); err != nil {
			t.Fatal(err)
		}
		if err := s.db.QueryRowContext(ctx, "INSERT INTO workspaces (scope_id, name, created_at) VALUES ($1, 'old', 1) RETURNING id", scope).Scan(&ws); err != nil {
			t.Fatal(err)
		}
		rows := []struct {
			typ, status, data string
			arch, backend     string // "-" for NULL
		}{
			{"Worker", "pending", `{"host_architecture": "amd64"}`, "amd64", "auto"},
			{"Worker", "pending", `{"host_architecture": "amd64", "backend": "unshare"}`, "amd64", "unshare"},
			{"Worker", "completed", `{"backend": "host", "host_architecture": "i386"}`, "i386", "host"},
			{"Server", "pending", `{"host_architecture": "amd64"}`, "-", "-"},
			{"Wait", "pending", `{"delay": "1h"}`, "-", "-"},
		}
		ids := make([]int64, len(rows))
		for i, r := range rows {
			result := ""
			if r.status == "completed" {
				result = "success"
			}
			if err := s.db.QueryRowContext(ctx, `INSERT INTO work_requests (task_type, task_name, workspace_id, status, result, data, created_at)
				VALUES ($1, 'noop', $2, $3, $4, $5, $6) RETURNING id`, r.typ, ws, r.status, result, r.data, i+1).Scan(&ids[i]); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.migrate(ctx); err != nil {
			t.Fatal(err)
		}
		for i, r := range rows {
			var a, b sql.NullString
			if err := s.db.QueryRowContext(ctx, "SELECT host_architecture, backend FROM work_requests WHERE id = $1", ids[i]).Scan(&a, &b); err != nil {
				t.Fatal(err)
			}
			if got, want := nullString(a)+" "+nullString(b), r.arch+" "+r.backend; got != want {
				t.Errorf("%s %s request %s: host_architecture, backend = %s; want %s", r.status, r.typ, r.data, got, want)
			}
		}
		// the upgraded kiln: its store, on the migrated database
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.FixTotals(ctx); err != nil { // the rows above came in behind the store's back
			t.Fatal(err)
		}
		w := &model.Worker{Name: "old-runner", WorkerType: model.WorkerExternal, Enabled: true}
		if err := s.Workers().Create(ctx, w); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.ConnectWorker(ctx, w.ID, model.WorkerMetadata{Architectures: []string{"amd64"}, Backends: []string{"unshare"}}); err != nil {
			t.Fatal(err)
		}
		for _, want := range ids[:2] {
			got, err := s.ClaimWorkRequest(ctx, w.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != want {
				t.Fatalf("claimed %d, want %d", got.ID, want)
			}
			if _, err := s.CompleteWorkRequest(ctx, got.ID, w.ID, Completion{Result: model.ResultSuccess}); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// migrationsUpTo is the embedded migrations up to version last: the
// schema of an older kiln.
func migrationsUpTo(t *testing.T, last int) fs.FS {
	t.Helper()
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	names, err := fs.Glob(sub, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	out := fstest.MapFS{}
	for _, n := range names {
		v, err := strconv.Atoi(strings.SplitN(n, "_", 2)[0])
		if err != nil || v > last {
			continue
		}
		body, err := fs.ReadFile(sub, n)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = &fstest.MapFile{Data: body}
	}
	return out
}

func nullString(v sql.NullString) string {
	if !v.Valid {
		return "-"
	}
	return v.String
}

// TestClaimQueriesReadTheIndexes checks, with EXPLAIN, that every range a
// claim reads is a search of a partial index over pending requests, on a
// queue of requests nobody asking can run (on PostgreSQL with sequential
// and bitmap scans disabled: on a table this small the planner would
// rightly read it whole). The benchmark shows the planner's own choice at
// 200k pending requests.
func TestClaimQueriesReadTheIndexes(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// requests nobody below can run, and statistics that know it
		var scope, ws int64
		if err := s.db.QueryRowContext(ctx, "INSERT INTO scopes (name, created_at) VALUES ('plan', 1) RETURNING id").Scan(&scope); err != nil {
			t.Fatal(err)
		}
		if err := s.db.QueryRowContext(ctx, "INSERT INTO workspaces (scope_id, name, created_at) VALUES ($1, 'plan', 1) RETURNING id", scope).Scan(&ws); err != nil {
			t.Fatal(err)
		}
		for i := range 500 {
			if _, err := s.db.ExecContext(ctx, `INSERT INTO work_requests (task_type, task_name, workspace_id, status, data, created_at)
				VALUES ('Worker', 'noop', $1, 'pending', '{"host_architecture": "mips64el"}', $2)`, ws, i); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.db.ExecContext(ctx, "ANALYZE"); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			w     *model.Worker
			index string
			arms  int
		}{
			{&model.Worker{WorkerType: model.WorkerExternal, Metadata: model.WorkerMetadata{
				Architectures: []string{"amd64", "i386"}, Backends: []string{"host", "unshare"}}}, "work_requests_pending_worker", 6},
			{&model.Worker{WorkerType: model.WorkerExternal, Metadata: model.WorkerMetadata{Architectures: []string{"arm64"}}}, "work_requests_pending_worker", 1},
			{&model.Worker{WorkerType: model.WorkerServer}, "work_requests_pending", 1},
			{&model.Worker{WorkerType: model.WorkerSigning}, "work_requests_pending", 1},
		}
		for _, c := range cases {
			q, args := s.nextRequestQuery(c.w)
			if len(args) > 0 {
				// a generic plan of a prepared statement would not know
				// the values (see safeLiteral)
				t.Errorf("%s worker: the claim binds %v instead of writing them as literals", c.w.WorkerType, args)
			}
			plan := explain(t, s, q, args...)
			if n := strings.Count(plan, c.index+" "); n != c.arms {
				t.Errorf("%s worker %v: %d searches of %s, want %d:\n%s", c.w.WorkerType, c.w.Metadata.Architectures, n, c.index, c.arms, plan)
			}
			for _, bad := range []string{"Seq Scan", "SCAN work_requests", "Bitmap"} {
				if strings.Contains(plan, bad) {
					t.Errorf("%s worker: the plan holds %q:\n%s", c.w.WorkerType, bad, plan)
				}
			}
		}
	})
}

// TestSchedulerReadsTheIndexes: the Wait scheduler's reads are ranges of
// the pending and running indexes, never a scan of the queue.
func TestSchedulerReadsTheIndexes(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// requests of every other kind, and statistics that know it
		var scope, ws int64
		if err := s.db.QueryRowContext(ctx, "INSERT INTO scopes (name, created_at) VALUES ('plan', 1) RETURNING id").Scan(&scope); err != nil {
			t.Fatal(err)
		}
		if err := s.db.QueryRowContext(ctx, "INSERT INTO workspaces (scope_id, name, created_at) VALUES ($1, 'plan', 1) RETURNING id", scope).Scan(&ws); err != nil {
			t.Fatal(err)
		}
		for i := range 600 {
			if _, err := s.db.ExecContext(ctx, `INSERT INTO work_requests (task_type, task_name, workspace_id, status, data, created_at)
				VALUES ($1, 'noop', $2, $3, '{"host_architecture": "amd64"}', $4)`,
				[]string{"Worker", "Server"}[i%2], ws, []string{"pending", "running", "completed"}[i%3], i); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.db.ExecContext(ctx, "ANALYZE"); err != nil {
			t.Fatal(err)
		}
		sel := s.workRequests().selectSQL() + " "
		for _, c := range []struct {
			q     string
			index string
		}{
			{sel + pendingOf(model.TaskWait) + " LIMIT 100", "work_requests_pending"},
			{sel + strings.Replace(dueWaits, "$1", "5", 1) + " LIMIT 100", "work_requests_running_due"},
			{sel + undueWaits + " LIMIT 100", "work_requests_running_due"},
			{strings.Replace(nextDueWait, "$1", "5", 1), "work_requests_running_due"},
		} {
			plan := explain(t, s, c.q)
			if !strings.Contains(plan, c.index+" ") {
				t.Errorf("%s\ndoes not read %s:\n%s", c.q, c.index, plan)
			}
			for _, bad := range []string{"Seq Scan", "SCAN work_requests", "Bitmap", "work_requests_status"} {
				if strings.Contains(plan, bad) {
					t.Errorf("%s\nthe plan holds %q:\n%s", c.q, bad, plan)
				}
			}
		}
	})
}

// explain returns the plan of q, one node per line.
func explain(t *testing.T, s *SQL, q string, args ...any) string {
	t.Helper()
	ctx := context.Background()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	prefix := "EXPLAIN QUERY PLAN "
	if s.dialect == Postgres {
		prefix = "EXPLAIN "
		for _, set := range []string{"SET enable_seqscan = off", "SET enable_bitmapscan = off"} {
			if _, err := conn.ExecContext(ctx, set); err != nil {
				t.Fatal(err)
			}
		}
		defer conn.ExecContext(ctx, "RESET ALL")
	}
	rows, err := conn.QueryContext(ctx, prefix+q, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var b strings.Builder
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		// PostgreSQL: one text column; SQLite: id, parent, notused, detail
		line := vals[len(vals)-1]
		switch v := line.(type) {
		case []byte:
			b.Write(v)
		case string:
			b.WriteString(v)
		}
		b.WriteByte('\n')
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
