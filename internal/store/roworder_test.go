package store

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestLedgerRowOrder: whatever order a ledger's rows come back in —
// the same as last time, with rows moved (a fold updated them), added,
// removed, reversed or shuffled — each row gets its own label set, and
// the order recorded for the next read is this read's.
func TestLedgerRowOrder(t *testing.T) {
	s := &SQL{}
	key := func(i int) string { return fmt.Sprintf("fam%d\x00{\"k\":\"v%d\"}", i%3, i) }
	read := func(ids []int) {
		t.Helper()
		lr := &ledgerRead{s: s, lg: ledger{table: "t"}, pending: map[string]int64{}, last: s.labels.order("t")}
		for _, id := range ids {
			lr.key = []byte(key(id))
			set, err := lr.set()
			if err != nil {
				t.Fatal(err)
			}
			if set.key != key(id) || set.labels["k"] != fmt.Sprintf("v%d", id) || set.family != fmt.Sprintf("fam%d", id%3) {
				t.Fatalf("rows %v: row %d got the set %+v", ids, id, set)
			}
		}
		if _, err := lr.totals(); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, set := range s.labels.order("t").sets {
			got = append(got, set.key)
		}
		want := []string{}
		for _, id := range ids {
			want = append(want, key(id))
		}
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("rows %v: order recorded %q", ids, got)
		}
	}
	for _, ids := range [][]int{
		{0, 1, 2, 3}, {0, 1, 2, 3}, {0, 2, 3, 1}, {0, 2, 3}, {0, 2}, {}, {0, 1, 2, 3, 4}, {4, 3, 2, 1, 0}, {4, 3, 9, 2, 1, 0, 8},
	} {
		read(ids)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	ids := []int{0, 1, 2, 3, 4, 5, 6, 7}
	for range 300 {
		switch rng.IntN(4) {
		case 0: // a row moves to the end
			if len(ids) > 0 {
				i := rng.IntN(len(ids))
				moved := ids[i]
				ids = append(slices.Delete(ids, i, i+1), moved)
			}
		case 1: // a row goes
			if len(ids) > 0 {
				i := rng.IntN(len(ids))
				ids = slices.Delete(ids, i, i+1)
			}
		case 2: // a new label set
			if id := rng.IntN(40); !slices.Contains(ids, id) {
				ids = slices.Insert(ids, rng.IntN(len(ids)+1), id)
			}
		case 3:
			rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		}
		read(slices.Clone(ids))
	}
}
