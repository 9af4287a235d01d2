package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestReplicasFoldTotals: two servers sharing one PostgreSQL database both
// run the folder; writes through either end up folded into the totals
// (the journal empties), with no difference from a recount, and the fold
// is counted on the internal listener. The folders stop with the servers.
func TestReplicasFoldTotals(t *testing.T) {
	dsn := testdb.Postgres(t)
	const token = "kiln_fold_test_admin_token_0123456789"
	cfg := func() Config {
		return Config{Database: dsn, BootstrapToken: token, MetricsServer: "127.0.0.1:0", FoldInterval: 20 * time.Millisecond}
	}
	a, b := start(t, cfg()), start(t, cfg())
	mustPost(t, a.API+"/api/1.0/scopes/", token, `{"name": "debian"}`)
	mustPost(t, b.API+"/api/1.0/workspaces/", token, `{"name": "main", "scope": "debian", "public": true}`)
	for i := 0; i < 20; i++ {
		r := []*running{a, b}[i%2]
		mustPost(t, r.API+"/api/1.0/work-requests/", token, fmt.Sprintf(
			`{"task_type": "Worker", "task_name": "noop", "workspace": "debian/main", "task_data": {"host_architecture": "arch%d"}}`, i%3))
	}

	st, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	waitFor(t, 10*time.Second, "the replicas to fold the journal", func() bool {
		var n int
		if err := st.DB().QueryRow("SELECT COUNT(*) FROM metric_journal").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	if diffs, err := st.CheckTotals(context.Background()); err != nil || len(diffs) != 0 {
		t.Fatalf("after folding: %v %v", diffs, err)
	}
	var folded float64
	for _, r := range []*running{a, b} {
		fams := scrape(t, r.Metrics)
		v, _ := fams["kiln_totals_folded_entries_total"].get("")
		folded += v
		if e, _ := fams["kiln_totals_fold_errors_total"].get(""); e != 0 {
			t.Errorf("%s counted %v failed folds", r.Metrics, e)
		}
	}
	// scope, workspace and 20 work requests: at least 22 journal entries
	if folded < 22 {
		t.Errorf("the replicas counted %v folded journal entries, want at least 22", folded)
	}
	for _, r := range []*running{a, b} {
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	}
}
