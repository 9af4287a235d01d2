package cli_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
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
