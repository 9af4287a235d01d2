package cli_test

import (
	"bytes"
	"database/sql"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testdb"
)

// TestBenchClaimsRuns keeps `kiln dev bench-claims` runnable: one short
// round on SQLite with real server and runner processes, on an empty queue
// and behind a small backlog.
func TestBenchClaimsRuns(t *testing.T) {
	var out, errs bytes.Buffer
	cmd := exec.Command(kilnBin, "dev", "bench-claims", "--runners", "1,2", "--rounds", "1", "--window", "1s", "--backlog", "2000")
	cmd.Env = cleanEnv(t)
	cmd.Dir = t.TempDir()
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench-claims: %v\n%s\n%s", err, out.String(), errs.String())
	}
	for _, want := range []string{
		"Database: sqlite.",
		"| kiln | empty | 1 |", "| kiln | empty | 2 |",
		"| kiln | 2k unmatched pending | 1 |", "| kiln | 2k unmatched pending | 2 |",
		"kiln: scaling 1 → 2 runners:",
		"kiln: backlog slowdown with 2 runners (empty ÷ backlog throughput):",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, out.String())
		}
	}
}

// TestBenchClaimsPostgres: on PostgreSQL the table also gives pgbench's
// TPS, each row's share of it and the CPU per noop of the database's
// processes serving the farm.
func TestBenchClaimsPostgres(t *testing.T) {
	dsn := testdb.Postgres(t)
	t.Cleanup(func() {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return
		}
		defer db.Close()
		for _, name := range []string{"kiln_bench_claims_kiln_empty", "kiln_bench_pgbench"} {
			db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		}
	})
	var out, errs bytes.Buffer
	cmd := exec.Command(kilnBin, "dev", "bench-claims", "--postgres", dsn, "--runners", "1", "--rounds", "1", "--window", "1s", "--backlog", "0")
	cmd.Env = cleanEnv(t)
	cmd.Dir = t.TempDir()
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench-claims: %v\n%s\n%s", err, out.String(), errs.String())
	}
	row := regexp.MustCompile(`(?m)^\| kiln \| empty \| 1 \| \d+ \| [\d, ]+ \| [\d.]+ % \| [\d.]+ ms \| [\d.]+ ms \| [\d.]+ ms \| [\d.]+ ms \|$`)
	if !strings.Contains(out.String(), "Database: postgres.") || !strings.Contains(out.String(), "pgbench -N -c 8 -j 2 -T 8 (median): ") ||
		!row.MatchString(out.String()) {
		t.Errorf("the table lacks pgbench's TPS, the share of it or the database's CPU:\n%s", out.String())
	}
}
