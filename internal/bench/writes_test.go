package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testdb"
)

// TestRunWrites runs the write benchmark briefly on both databases: every
// cell is measured, with and without totals, and the table shows them.
func TestRunWrites(t *testing.T) {
	rs, err := RunWrites(context.Background(), WriteConfig{Postgres: testdb.Postgres(t), SQLiteDir: t.TempDir(),
		Writers: []int{1, 2}, Rounds: 1, Round: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2*len(writeOps)*2 {
		t.Fatalf("%d results, want %d", len(rs), 2*len(writeOps)*2)
	}
	sampled := 0
	for _, r := range rs {
		if r.With <= 0 || r.Without <= 0 || r.Ratio <= 0 {
			t.Errorf("%+v: a figure is not positive", r)
		}
		// PostgreSQL's processes are read from /proc: known when the
		// server runs on this machine, as in CI
		if r.Database == "SQLite" && (r.CPUWith <= 0 || r.CPUWithout <= 0 || r.CPURatio <= 0) {
			t.Errorf("%+v: no CPU time per write", r)
		}
		if r.Database == "SQLite" && len(r.Waits) > 0 {
			t.Errorf("SQLite %s %d: wait events %v", r.Operation, r.Writers, r.Waits)
		}
		if len(r.Waits) > 0 {
			sampled++
		}
	}
	// rounds this short may end before a sample on a loaded machine
	if sampled == 0 {
		t.Error("no wait events sampled on PostgreSQL")
	}
	var out bytes.Buffer
	WriteTable(&out, rs)
	for _, want := range []string{"| PostgreSQL | artifact (3 files) | 2 |", "| SQLite | work request | 1 |", "wait events", "CPU time per write"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
