package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestReadAllFailures: a read that fails — in the database when it is
// prepared or run, or in the code handling its rows — fails the whole snapshot, and leaves the
// connection it ran on usable: the next snapshot on the same single
// connection reads every figure.
func TestReadAllFailures(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Bootstrap(ctx, "kiln_test", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		s.db.SetMaxOpenConns(1)
		want, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var id int64
		var name string
		scopes := read{query: "SELECT id, name FROM scopes", dest: scan(&id, &name), row: func() error { return nil }}
		oops := errors.New("oops")
		failures := map[string][]read{
			"row callback": {scopes, {query: "SELECT id, 'x' FROM users", dest: scan(&id, &name), row: func() error { return oops }}, scopes},
			"database":     {scopes, {query: "SELECT no_such_column FROM users", dest: scan(&id), row: func() error { return nil }}, scopes},
			"execution":    {scopes, {query: "SELECT id / (id - id) FROM users", dest: scan(&id), row: func() error { return nil }}, scopes},
			"scan":         {{query: "SELECT 'x' FROM users", dest: scan(&id), row: func() error { return nil }}, scopes},
		}
		for what, reads := range failures {
			err := s.readAll(ctx, reads...)
			if err == nil || what == "row callback" && !errors.Is(err, oops) || what == "database" && !strings.Contains(err.Error(), "no_such_column") {
				t.Errorf("%s: readAll returned %v", what, err)
			}
			got, err := s.Snapshot(ctx)
			if err != nil {
				t.Fatalf("after a failing %s: %v", what, err)
			}
			if a, b := totalsText(got.Totals), totalsText(want.Totals); a != b || !reflect.DeepEqual(got.TokenLastSeen, want.TokenLastSeen) {
				t.Errorf("after a failing %s: totals\n%s\nwant\n%s", what, a, b)
			}
		}
	})
}

// TestTokenAges: the database counts enabled tokens by the time since
// they were last used into TokenAgeBounds, an age equal to a bound in
// its bucket and one a microsecond longer in the next; a token never used
// or disabled is not counted, one "used" after the snapshot's time counts
// as age 0, and the sum is exact to the microsecond.
func TestTokenAges(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// nanoseconds the database cannot keep: the snapshot drops them
		now := time.Date(2026, 12, 1, 9, 0, 0, 789, time.UTC)
		s.SetClock(func() time.Time { return now })
		u := &model.User{Username: "alice", Active: true}
		if err := s.Users().Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		taken := now.Truncate(time.Microsecond)
		never := time.Duration(-1)
		for _, tk := range []struct {
			age     time.Duration
			enabled bool
		}{
			{never, true}, {30 * time.Second, true}, {time.Minute, true}, {time.Minute + time.Microsecond, true},
			{2 * time.Hour, true}, {-5 * time.Second, true}, {400 * 24 * time.Hour, true}, {10 * time.Second, false},
		} {
			tok, err := s.CreateToken(ctx, model.Token{UserID: &u.ID, Enabled: tk.enabled})
			if err != nil {
				t.Fatal(err)
			}
			if tk.age == never {
				continue
			}
			if _, err := s.db.ExecContext(ctx, "UPDATE tokens SET last_seen_at = $1 WHERE id = $2", toMicros(taken.Add(-tk.age)), tok.ID); err != nil {
				t.Fatal(err)
			}
		}
		snap, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// 30 s, 60 s and -5 s (0) within a minute; 60 s + 1 µs within an
		// hour; 2 h within a day; 400 days past a year
		want := AgeHistogram{Counts: []int64{3, 1, 1, 0, 0, 0, 0, 1},
			Sum: float64((30+60+60+7200+400*86400)*1_000_000+1) / 1e6}
		if !snap.Taken.Equal(taken) || !reflect.DeepEqual(snap.TokenLastSeen, want) {
			t.Fatalf("taken %s, token ages %+v; want %s, %+v", snap.Taken, snap.TokenLastSeen, taken, want)
		}
	})
}

// TestReadGroupsOneSnapshot: the groups of a snapshot read one state of
// the database even while others write. On PostgreSQL the groups run on
// connections of their own, the second importing the first's snapshot;
// without the import, scopes created between the two transactions'
// starts would be counted by one group and not by the other.
func TestReadGroupsOneSnapshot(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.Scopes().Create(ctx, &model.Scope{Name: fmt.Sprintf("s%d", i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
		defer func() { close(stop); wg.Wait() }()
		// until the writer has created scopes during 40 snapshots at least
		seen := map[int64]bool{}
		deadline := time.Now().Add(20 * time.Second)
		for i := 0; i < 40 || len(seen) < 3; i++ {
			if time.Now().After(deadline) {
				t.Fatalf("%d snapshots saw %d different numbers of scopes", i, len(seen))
			}
			var a, b int64
			count := func(into *int64) []read {
				return []read{{query: "SELECT COUNT(*) FROM scopes", dest: scan(into), row: func() error { return nil }}}
			}
			if err := s.readGroups(ctx, count(&a), count(&b)); err != nil {
				t.Fatal(err)
			}
			if a != b {
				t.Fatalf("one snapshot counted %d scopes in one group and %d in the other", a, b)
			}
			seen[a] = true
		}
	})
}

// TestReadGroupsFailures: a group that fails — in the database or in the
// code handling its rows, on the exporting connection or on the importing
// one — fails the whole read, and leaves no connection in a transaction:
// the next snapshot reads every figure.
func TestReadGroupsFailures(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Bootstrap(ctx, "kiln_test", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		s.db.SetMaxOpenConns(2)
		want, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var id int64
		good := []read{{query: "SELECT id FROM scopes", dest: scan(&id), row: func() error { return nil }}}
		oops := errors.New("oops")
		bad := map[string][]read{
			"database":     {{query: "SELECT no_such_column FROM users", dest: scan(&id), row: func() error { return nil }}},
			"row callback": {{query: "SELECT id FROM users", dest: scan(&id), row: func() error { return oops }}},
		}
		for what, failing := range bad {
			for i, groups := range [][][]read{{failing, good}, {good, failing}} {
				err := s.readGroups(ctx, groups...)
				if err == nil || what == "row callback" && !errors.Is(err, oops) {
					t.Errorf("%s in group %d: readGroups returned %v", what, i, err)
				}
				if s.dialect == Postgres {
					var open int
					if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity
						WHERE datname = current_database() AND state LIKE 'idle in transaction%'`).Scan(&open); err != nil || open != 0 {
						t.Errorf("%s in group %d: %d connections left in a transaction (%v)", what, i, open, err)
					}
				}
				got, err := s.Snapshot(ctx)
				if err != nil {
					t.Fatalf("after a failing %s in group %d: %v", what, i, err)
				}
				if a, b := totalsText(got.Totals), totalsText(want.Totals); a != b || !reflect.DeepEqual(got.ScopeNames, want.ScopeNames) {
					t.Errorf("after a failing %s in group %d: totals\n%s\nwant\n%s", what, i, a, b)
				}
			}
		}
	})
}
