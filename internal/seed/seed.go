// Package seed fills a kiln database with a large synthetic farm for
// benchmarks: scopes, workspaces, users, workers, work requests, artifacts
// and files in realistic proportions. Rows are bulk-loaded (COPY on
// PostgreSQL, batched inserts on SQLite) rather than created one by one, so
// the running totals are then rebuilt from the base tables with
// store.FixTotals and folded into the totals tables — which leaves the
// database exactly as if every row had gone through the store.
package seed

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// Sizes says how big a farm to make.
type Sizes struct {
	Scopes           int
	WorkspacesEach   int
	Users            int
	Workers          int
	WorkRequests     int
	Artifacts        int
	FilesPerArtifact int
	// RequestsPerDay is the rate at which the farm received its work
	// requests, up to now: a farm of more requests is older, not busier,
	// so that any window of days holds as much work in a small farm as in
	// a large one (as long as the small one is that old). 0 spreads the
	// requests over the last year instead.
	RequestsPerDay int
}

// history is how far back the farm's work requests go.
func (sz Sizes) history() time.Duration {
	if sz.RequestsPerDay <= 0 {
		return 365 * 24 * time.Hour
	}
	return time.Duration(float64(sz.WorkRequests) / float64(sz.RequestsPerDay) * float64(24*time.Hour))
}

// Benchmark is the farm of the scrape benchmark (issue: 1M work requests,
// 1M artifacts with 3M files, 10k workers, 50 scopes).
// Requests arrive at about 333 a day: a farm of 10k requests is a month
// old, one of 1M eight years.
var Benchmark = Sizes{Scopes: 50, WorkspacesEach: 4, Users: 2000, Workers: 10000, WorkRequests: 1_000_000, Artifacts: 1_000_000,
	FilesPerArtifact: 3, RequestsPerDay: 10_000 / 30}

// Progress receives progress reports: what is being loaded, done, total.
type Progress func(what string, done, total int)

var (
	archs = []string{"amd64", "arm64", "i386", "armhf", "ppc64el", "s390x", "riscv64", "hurd-i386"}
	// the label space is bounded as in a real farm (a few task names,
	// architectures and one backend per scope), so that a small seeded farm
	// already has most of the series a large one has
	taskNames  = []string{"sbuild", "lintian", "autopkgtest", "piuparts"}
	statuses   = []string{"completed", "completed", "completed", "completed", "pending", "running", "aborted", "blocked"}
	finished   = []string{"completed", "completed", "completed", "completed", "aborted"}
	results    = []string{"success", "success", "success", "failure", "error"}
	categories = []string{"debian:source-package", "debian:binary-package", "debian:upload", "kiln:work-request-debug-logs"}
	backends   = []string{"unshare"}
)

// EnsureFileStore gives a database without a file store (bootstrapped
// with no data directory) a default Local one, which the synthetic farm's
// files name. They are rows only: the store has no directory.
func EnsureFileStore(ctx context.Context, st *store.SQL) error {
	if _, err := st.DefaultFileStore(ctx); err == nil {
		return nil
	}
	_, err := st.DB().ExecContext(ctx, `INSERT INTO file_stores (name, backend, configuration, is_default, created_at)
		VALUES ('default', 'Local', '{}', TRUE, 0)`)
	return err
}

// Fill adds a synthetic farm of the given sizes to the database behind st
// and rebuilds the running totals. It expects a bootstrapped database.
func Fill(ctx context.Context, st *store.SQL, sz Sizes, rng *rand.Rand, progress Progress) error {
	if progress == nil {
		progress = func(string, int, int) {}
	}
	db := st.DB()
	base, err := maxIDs(ctx, db)
	if err != nil {
		return err
	}
	var fsID int64
	if err := db.QueryRowContext(ctx, "SELECT id FROM file_stores ORDER BY is_default DESC, id LIMIT 1").Scan(&fsID); err != nil {
		return fmt.Errorf("no file store (see EnsureFileStore): %w", err)
	}
	now := time.Now().UnixMicro()
	day := int64(24 * time.Hour / time.Microsecond)
	w := &writer{st: st, progress: progress}

	scopeIDs := seq(base["scopes"], sz.Scopes)
	if err := w.load(ctx, "scopes", []string{"id", "name", "label", "created_at"}, len(scopeIDs), func(i int) []any {
		return []any{scopeIDs[i], fmt.Sprintf("seed-scope-%d", scopeIDs[i]), "", now}
	}); err != nil {
		return err
	}
	wsIDs := seq(base["workspaces"], sz.Scopes*sz.WorkspacesEach)
	if err := w.load(ctx, "workspaces", []string{"id", "scope_id", "name", "public", "created_at"}, len(wsIDs), func(i int) []any {
		return []any{wsIDs[i], scopeIDs[i%len(scopeIDs)], fmt.Sprintf("ws-%d", wsIDs[i]), i%3 != 0, now}
	}); err != nil {
		return err
	}
	userIDs := seq(base["users"], sz.Users)
	if err := w.load(ctx, "users", []string{"id", "username", "active", "is_admin", "is_system", "created_at"}, len(userIDs), func(i int) []any {
		return []any{userIDs[i], fmt.Sprintf("seed-user-%d", userIDs[i]), i%10 != 0, false, false, now}
	}); err != nil {
		return err
	}
	if err := w.load(ctx, "identities", []string{"user_id", "issuer", "subject", "created_at"}, len(userIDs)/2, func(i int) []any {
		return []any{userIDs[i*2], []string{"salsa.debian.org", "sso.example.org"}[i%2], fmt.Sprintf("sub-%d", userIDs[i*2]), now}
	}); err != nil {
		return err
	}
	if err := w.load(ctx, "user_scope_activity", []string{"user_id", "scope_id", "last_workflow_at"}, len(userIDs), func(i int) []any {
		return []any{userIDs[i], scopeIDs[i%len(scopeIDs)], now - rng.Int63n(400*day)}
	}); err != nil {
		return err
	}
	workerIDs := seq(base["workers"], sz.Workers)
	if err := w.load(ctx, "workers", []string{"id", "name", "worker_type", "enabled", "connected_at", "last_seen_at", "metadata", "created_at"},
		len(workerIDs), func(i int) []any {
			host := archs[i%3]
			meta, _ := json.Marshal(map[string]any{"system:architectures": []string{host, archs[(i+2)%len(archs)]}, "system:host_architecture": host,
				"system:backends": []string{"host", "unshare"}})
			var connected any
			if i%4 != 0 {
				connected = now
			}
			return []any{workerIDs[i], fmt.Sprintf("seed-worker-%d", workerIDs[i]), "external", true, connected, now, string(meta), now}
		}); err != nil {
		return err
	}
	if err := w.load(ctx, "tokens", []string{"hash", "prefix", "enabled", "user_id", "worker_id", "last_seen_at", "created_at"}, len(workerIDs), func(i int) []any {
		return []any{fmt.Sprintf("seed-%d-%d", base["tokens"], i), "seed", i%7 != 0, nil, workerIDs[i], now - rng.Int63n(30*day), now}
	}); err != nil {
		return err
	}
	wrIDs := seq(base["work_requests"], sz.WorkRequests)
	busy := map[int64]bool{}
	// a few busy workspaces and many quiet ones, as on a real farm
	// (Zipf's law, s = 1.2): the busiest gets about a fifth of the work
	wsOf := rand.NewZipf(rng, 1.2, 1, uint64(len(wsIDs)-1))
	if err := w.load(ctx, "work_requests", []string{"id", "task_type", "task_name", "workspace_id", "status", "result", "data", "priority",
		"created_at", "started_at", "completed_at", "worker_id", "execution_time"}, len(wrIDs), func(i int) []any {
		created := now - 1 - rng.Int63n(sz.history().Microseconds())
		// what is older than a day has finished; the queue is today's
		status := statuses[rng.Intn(len(statuses))]
		if now-created > day && !model.Status(status).Finished() {
			status = finished[rng.Intn(len(finished))]
		}
		var result string
		var started, completed, worker, exec any
		switch status {
		case "completed":
			result = results[rng.Intn(len(results))]
			// waits of seconds to minutes, runs of up to an hour, all
			// over by now
			wait, d := 1e6+rng.Int63n(rng.Int63n(900e6)+1), rng.Int63n(3600e6)
			if over := created + wait + d - now; over > 0 {
				wait, d = (now-created)/2, (now-created)/2
			}
			started, completed, exec = created+wait, created+wait+d, d
		case "aborted":
			completed = created + min(now-created, rng.Int63n(3600e6))
		case "running":
			wk := workerIDs[rng.Intn(len(workerIDs))]
			if !busy[wk] {
				busy[wk] = true
				started, worker = created+1e6, wk
			} else {
				status = "pending"
			}
		}
		data := fmt.Sprintf(`{"host_architecture": %q, "backend": %q}`, archs[rng.Intn(3)], backends[rng.Intn(len(backends))])
		return []any{wrIDs[i], "Worker", taskNames[rng.Intn(len(taskNames))], wsIDs[wsOf.Uint64()], status, result, data,
			0, created, started, completed, worker, exec}
	}); err != nil {
		return err
	}
	artIDs := seq(base["artifacts"], sz.Artifacts)
	if err := w.load(ctx, "artifacts", []string{"id", "category", "workspace_id", "data", "created_at"}, len(artIDs), func(i int) []any {
		return []any{artIDs[i], categories[rng.Intn(len(categories))], wsIDs[rng.Intn(len(wsIDs))], "{}", now}
	}); err != nil {
		return err
	}
	nFiles := len(artIDs) * sz.FilesPerArtifact
	fileIDs := seq(base["files"], nFiles)
	sizes := make([]int64, nFiles)
	var totalSize int64
	if err := w.load(ctx, "files", []string{"id", "file_store_id", "sha256", "size", "created_at"}, nFiles, func(i int) []any {
		sizes[i] = rng.Int63n(64 << 20)
		totalSize += sizes[i]
		return []any{fileIDs[i], fsID, fmt.Sprintf("%064x", fileIDs[i]), sizes[i], now}
	}); err != nil {
		return err
	}
	if err := w.load(ctx, "artifact_files", []string{"artifact_id", "path", "sha256", "size", "file_id"}, nFiles, func(i int) []any {
		return []any{artIDs[i/sz.FilesPerArtifact], fmt.Sprintf("file-%d", i%sz.FilesPerArtifact), fmt.Sprintf("%064x", fileIDs[i]), sizes[i], fileIDs[i]}
	}); err != nil {
		return err
	}
	if err := resetSequences(ctx, st); err != nil {
		return err
	}
	progress("running totals", 0, 1)
	if _, err := st.FixTotals(ctx); err != nil {
		return fmt.Errorf("rebuild running totals: %w", err)
	}
	if _, err := st.FixStatistics(ctx); err != nil {
		return fmt.Errorf("rebuild the dashboard's rollups: %w", err)
	}
	if _, err := st.FoldAll(ctx); err != nil {
		return fmt.Errorf("fold the rebuilt running totals: %w", err)
	}
	progress("running totals", 1, 1)
	if st.Dialect() == store.Postgres {
		if _, err := db.ExecContext(ctx, "ANALYZE"); err != nil {
			return err
		}
	}
	return nil
}

func seq(after int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = after + int64(i) + 1
	}
	return out
}

var seededTables = []string{"scopes", "workspaces", "users", "workers", "tokens", "work_requests", "artifacts", "files"}

func maxIDs(ctx context.Context, db *sql.DB) (map[string]int64, error) {
	out := map[string]int64{}
	for _, t := range seededTables {
		var m sql.NullInt64
		if err := db.QueryRowContext(ctx, "SELECT MAX(id) FROM "+t).Scan(&m); err != nil {
			return nil, err
		}
		out[t] = m.Int64
	}
	return out, nil
}

// resetSequences moves PostgreSQL's identity sequences past the ids the
// seed chose itself (SQLite needs nothing).
func resetSequences(ctx context.Context, st *store.SQL) error {
	if st.Dialect() != store.Postgres {
		return nil
	}
	for _, t := range append(seededTables, "identities") {
		if _, err := st.DB().ExecContext(ctx, fmt.Sprintf(
			"SELECT setval(pg_get_serial_sequence('%s', 'id'), COALESCE((SELECT MAX(id) FROM %s), 0) + 1, false)", t, t)); err != nil {
			return fmt.Errorf("reset %s sequence: %w", t, err)
		}
	}
	return nil
}

// writer bulk-loads rows.
type writer struct {
	st       *store.SQL
	progress Progress
}

const batch = 5000

func (w *writer) load(ctx context.Context, table string, cols []string, n int, row func(i int) []any) error {
	if n == 0 {
		return nil
	}
	w.progress(table, 0, n)
	if w.st.Dialect() == store.Postgres {
		conn, err := w.st.DB().Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		return conn.Raw(func(dc any) error {
			pc := dc.(*stdlib.Conn).Conn()
			i := 0
			_, err := pc.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromFunc(func() ([]any, error) {
				if i >= n {
					return nil, nil
				}
				r := row(i)
				i++
				if i%batch == 0 || i == n {
					w.progress(table, i, n)
				}
				return r, nil
			}))
			if err != nil {
				return fmt.Errorf("copy into %s: %w", table, err)
			}
			return nil
		})
	}
	ph := make([]string, len(cols))
	for i := range ph {
		ph[i] = fmt.Sprintf("$%d", i+1)
	}
	q := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(ph, ", ") + ")"
	for start := 0; start < n; start += batch {
		tx, err := w.st.DB().BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, q)
		if err != nil {
			tx.Rollback()
			return err
		}
		for i := start; i < min(n, start+batch); i++ {
			if _, err := stmt.ExecContext(ctx, row(i)...); err != nil {
				tx.Rollback()
				return fmt.Errorf("insert into %s: %w", table, err)
			}
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			return err
		}
		w.progress(table, min(n, start+batch), n)
	}
	return nil
}
