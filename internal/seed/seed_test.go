package seed_test

import (
	"context"
	"math/rand"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/seed"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

func TestFill(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		st, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.Bootstrap(ctx, "kiln_x", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		sz := seed.Sizes{Scopes: 3, WorkspacesEach: 2, Users: 20, Workers: 10, WorkRequests: 500, Artifacts: 200, FilesPerArtifact: 3}
		if err := seed.Fill(ctx, st, sz, rand.New(rand.NewSource(1)), nil); err != nil {
			t.Fatal(err)
		}
		diffs, err := st.CheckTotals(ctx)
		if err != nil || len(diffs) != 0 {
			t.Fatalf("totals after seeding differ from recount: %v %v", err, diffs)
		}
		rollups, n, err := st.CheckStatistics(ctx, 10)
		if err != nil || n != 0 {
			t.Fatalf("rollups after seeding differ from recount: %v %d %v", err, n, rollups)
		}
		// the rebuilt totals are folded: scrapes read no journal
		var journal int
		if err := st.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM metric_journal").Scan(&journal); err != nil || journal != 0 {
			t.Fatalf("%d rows left in the journal after seeding (%v)", journal, err)
		}
		snap, err := st.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sum := map[string]int64{}
		for _, tot := range snap.Totals {
			sum[tot.Family] += tot.Value
		}
		if sum["work_requests"] != 500 || sum["artifacts"] != 200 || sum["workers"] != 10 {
			t.Fatalf("unexpected totals: %v", sum)
		}
		// the store keeps working on a seeded database (sequences moved on)
		if err := st.Scopes().Create(ctx, &model.Scope{Name: "after-seed"}); err != nil {
			t.Fatal(err)
		}
		// a second fill adds to the first
		if err := seed.Fill(ctx, st, sz, rand.New(rand.NewSource(2)), nil); err != nil {
			t.Fatal(err)
		}
	})
}

// A database bootstrapped without a data directory (kiln dev seed's) gets
// the file store its synthetic files name.
func TestFillWithoutAFileStore(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		st, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.Bootstrap(ctx, "kiln_x", ""); err != nil {
			t.Fatal(err)
		}
		for range 2 { // once is enough
			if err := seed.EnsureFileStore(ctx, st); err != nil {
				t.Fatal(err)
			}
		}
		sz := seed.Sizes{Scopes: 1, WorkspacesEach: 1, Users: 2, Workers: 1, WorkRequests: 10, Artifacts: 5, FilesPerArtifact: 2}
		if err := seed.Fill(ctx, st, sz, rand.New(rand.NewSource(1)), nil); err != nil {
			t.Fatal(err)
		}
	})
}
