package store

import (
	"context"
	"errors"
	"strings"
	"testing"

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
			if a, b := totalsText(got.Totals), totalsText(want.Totals); a != b || len(got.TokenLastSeen) != len(want.TokenLastSeen) {
				t.Errorf("after a failing %s: totals\n%s\nwant\n%s", what, a, b)
			}
		}
	})
}
