package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
)

// failOnce makes the next transaction that reaches step fail there with a
// database error (SQL.hook), and reports whether that happened.
func failOnce(s *SQL, step string) (fired func() bool) {
	var mu sync.Mutex
	done := false
	s.hook = func(at string) bool {
		mu.Lock()
		defer mu.Unlock()
		if at != step || done {
			return false
		}
		done = true
		return true
	}
	return func() bool { mu.Lock(); defer mu.Unlock(); return done }
}

// dbState is everything a write or fold may change, as text: the rows the
// test writes touch, the totals and the journal.
func dbState(t *testing.T, s *SQL) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		"SELECT id, category, workspace_id FROM artifacts ORDER BY id",
		"SELECT artifact_id, path, size FROM artifact_files ORDER BY artifact_id, path",
		"SELECT id, status, task_name FROM work_requests ORDER BY id",
		"SELECT id, name, CASE WHEN public THEN 1 ELSE 0 END FROM workspaces ORDER BY id",
		"SELECT family, labels, value FROM metric_totals ORDER BY family, labels",
		// the journal has no order of its own: its changes are sorted
		"SELECT family, labels, value FROM (" + s.journalChanges("metric_journal") + ") x",
		"SELECT COUNT(*), '', '' FROM metric_journal",
	} {
		rows, err := s.db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for rows.Next() {
			var a, b, c string
			if err := rows.Scan(&a, &b, &c); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, a+" "+b+" "+c)
		}
		rows.Close()
		sort.Strings(lines)
		fmt.Fprintf(&b, "%s:\n  %s\n", q, strings.Join(lines, "\n  "))
	}
	return b.String()
}

// totalsText renders totals in a canonical order: folded totals come in
// the database's collation, journal-only ones after them.
func totalsText(ts []Total) string {
	lines := make([]string, len(ts))
	for i, t := range ts {
		k := key(t.Family, t.Labels)
		lines[i] = fmt.Sprintf("%s%s %d", k.family, k.labels, t.Value)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// atomicityFarm is a small farm the atomicity tests write to.
type atomicityFarm struct {
	ws       *model.Workspace
	artifact *model.Artifact
}

func newAtomicityFarm(t *testing.T, s *SQL) *atomicityFarm {
	ctx := context.Background()
	if _, err := s.Bootstrap(ctx, "kiln_test", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	sc := &model.Scope{Name: "debian"}
	if err := s.Scopes().Create(ctx, sc); err != nil {
		t.Fatal(err)
	}
	f := &atomicityFarm{ws: &model.Workspace{Name: "main", ScopeID: sc.ID, Public: true}}
	if err := s.Workspaces().Create(ctx, f.ws); err != nil {
		t.Fatal(err)
	}
	f.artifact = newArtifact(f.ws.ID)
	if err := s.Artifacts().Create(ctx, f.artifact); err != nil {
		t.Fatal(err)
	}
	return f
}

func newArtifact(ws int64) *model.Artifact {
	a := &model.Artifact{Category: "debian:binary-package", WorkspaceID: ws}
	for i, size := range []int64{10, 20000, 3 << 20} {
		a.Files = append(a.Files, model.ArtifactFile{Path: fmt.Sprintf("f%d", i), SHA256: strings.Repeat(fmt.Sprint(i), 64), Size: size})
	}
	return a
}

// atomicityWrite is one kind of write the atomicity tests pin.
type atomicityWrite struct {
	name string
	do   func(context.Context) error
}

// writes are the kinds of write whose atomicity the tests pin: a create
// with side rows, an update that moves a row between label sets, a work
// request's submission, and a delete (last: it can run only once).
func (f *atomicityFarm) writes(s *SQL) []atomicityWrite {
	return []atomicityWrite{
		{"create artifact", func(ctx context.Context) error { return s.Artifacts().Create(ctx, newArtifact(f.ws.ID)) }},
		{"update workspace", func(ctx context.Context) error {
			_, err := s.Workspaces().Update(ctx, f.ws.ID, nil, func(w *model.Workspace) error { w.Public = !w.Public; return nil })
			return err
		}},
		{"submit work request", func(ctx context.Context) error {
			return s.SubmitWorkRequest(ctx, &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID,
				Data: json.RawMessage(`{"host_architecture": "amd64"}`)})
		}},
		{"delete artifact", func(ctx context.Context) error { _, err := s.DeleteArtifact(ctx, f.artifact.ID, nil); return err }},
	}
}

// TestTotalsAtomicWithRows injects a database error into a write at the
// journal of total changes (the journal write fails) and just after it
// (before COMMIT): the row change must go with it, and a reader must see
// exactly what it saw before — on both databases. A store that wrote the
// journal (or the totals) after COMMIT fails this test.
func TestTotalsAtomicWithRows(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		f := newAtomicityFarm(t, s)
		for _, w := range f.writes(s) {
			name, write := w.name, w.do
			for _, step := range []string{stepJournal, stepCommit} {
				before := dbState(t, s)
				snapBefore, err := s.Snapshot(ctx)
				if err != nil {
					t.Fatal(err)
				}
				fired := failOnce(s, step)
				err = write(ctx)
				s.hook = nil
				if !fired() || err == nil || !strings.Contains(err.Error(), "fault injected at step "+step) {
					t.Errorf("%s with a fault at %s: reached it %v, err = %v, want the injected fault", name, step, fired(), err)
				}
				if after := dbState(t, s); after != before {
					t.Errorf("%s failed at %s but changed the database:\nbefore:\n%s\nafter:\n%s", name, step, before, after)
				}
				snapAfter, err := s.Snapshot(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if a, b := totalsText(snapBefore.Totals), totalsText(snapAfter.Totals); a != b {
					t.Errorf("%s failed at %s but the snapshot changed:\n%s\n%s", name, step, a, b)
				}
			}
			// the same write without a fault changes rows and journal:
			// the comparison above can see a change
			before := dbState(t, s)
			if err := write(ctx); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if dbState(t, s) == before {
				t.Errorf("%s changed nothing: the test cannot tell a rollback", name)
			}
		}
		if diffs, err := s.CheckTotals(ctx); err != nil || len(diffs) != 0 {
			t.Fatalf("%v %v", diffs, err)
		}
	})
}

// TestFoldAtomic injects a database error into a fold after it merged the
// journal into the totals (before it commits), and at its COMMIT: totals
// and journal must be as they were, and a later fold must merge
// everything exactly once.
func TestFoldAtomic(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		f := newAtomicityFarm(t, s)
		for _, w := range f.writes(s) {
			if err := w.do(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if journalRows(t, s) == 0 {
			t.Fatal("no journal rows to fold")
		}
		snap, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range []string{stepFold, stepCommit} {
			before := dbState(t, s)
			fired := failOnce(s, step)
			_, err := s.Fold(ctx)
			s.hook = nil
			if !fired() || err == nil || !strings.Contains(err.Error(), "fault injected at step "+step) {
				t.Fatalf("fold with a fault at %s: fired %v, err %v", step, fired(), err)
			}
			if after := dbState(t, s); after != before {
				t.Errorf("a fold failed at %s but changed the database:\nbefore:\n%s\nafter:\n%s", step, before, after)
			}
		}
		res, err := s.Fold(ctx)
		if err != nil || res.Entries == 0 || res.Busy || res.More {
			t.Fatalf("fold: %+v %v", res, err)
		}
		if n := journalRows(t, s); n != 0 {
			t.Errorf("%d journal rows left after a fold", n)
		}
		after, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := totalsText(snap.Totals), totalsText(after.Totals); a != b {
			t.Errorf("folding changed the figures:\n%s\n%s", a, b)
		}
		if diffs, err := s.CheckTotals(ctx); err != nil || len(diffs) != 0 {
			t.Fatalf("%v %v", diffs, err)
		}
	})
}
