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
	for _, r := range rs {
		if r.With <= 0 || r.Without <= 0 || r.Ratio <= 0 {
			t.Errorf("%+v: a figure is not positive", r)
		}
		if (r.Database == "PostgreSQL") != (len(r.Waits) > 0) {
			t.Errorf("%s %s %d: wait events %v (sampled on PostgreSQL only)", r.Database, r.Operation, r.Writers, r.Waits)
		}
	}
	var out bytes.Buffer
	WriteTable(&out, rs)
	for _, want := range []string{"| PostgreSQL | artifact (3 files) | 2 |", "| SQLite | work request | 1 |", "wait events"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
