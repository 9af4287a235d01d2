package store

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestFoldConcurrentWithWrites runs three random farms at once — creates,
// updates, lifecycle moves, deletes, deliberate rollbacks, and injected
// database errors at the journal write, before COMMIT and inside folds —
// while a folder folds without pause and a checker compares recounts with
// the totals in the middle of it all. Every check, during and after, must
// find no difference, and the final fold must leave the journal empty.
func TestFoldConcurrentWithWrites(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		seed := time.Now().UnixNano()
		t.Logf("seed %d", seed)
		if _, err := s.Bootstrap(ctx, "kiln_test", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		var faultMu sync.Mutex
		faultRng := rand.New(rand.NewSource(seed))
		injected := map[string]int{}
		reached := map[string]int{}
		s.hook = func(step string) bool {
			faultMu.Lock()
			defer faultMu.Unlock()
			reached[step]++
			// folds are fewer than writes: fail every third
			if step == stepFold && reached[step]%3 == 0 || step != stepFold && faultRng.Intn(12) == 0 {
				injected[step]++
				return true
			}
			return false
		}

		stop := make(chan struct{})
		var bg sync.WaitGroup
		var foldFaults int
		var folds, checks atomic.Int64
		var checkTime time.Duration
		bg.Add(2)
		go func() { // the folder
			defer bg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := s.Fold(ctx)
				if err != nil {
					if !strings.Contains(err.Error(), "fault injected") {
						t.Errorf("fold: %v", err)
						return
					}
					foldFaults++
				}
				if res.Entries > 0 {
					folds.Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		}()
		go func() { // the checker
			defer bg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				diffs, err := s.CheckTotals(ctx)
				checkTime += time.Since(start)
				if err != nil {
					t.Errorf("check: %v", err)
					return
				}
				for _, d := range diffs {
					t.Errorf("during the mix: %s", d)
				}
				checks.Add(1)
			}
		}()

		var farms sync.WaitGroup
		var ops, failed int
		var mu sync.Mutex
		for i := 0; i < 3; i++ {
			farms.Add(1)
			go func(seed int64) {
				defer farms.Done()
				f := newRandomFarm(t, s, rand.New(rand.NewSource(seed)))
				f.faults = true
				// 150 steps each, and on until several folds ran and
				// the checker compared several snapshots mid-mix
				deadline := time.Now().Add(20 * time.Second)
				more := func() bool { return (checks.Load() < 5 || folds.Load() < 6) && time.Now().Before(deadline) }
				for j := 0; (j < 150 || more()) && !f.broken; j++ {
					f.step(ctx)
				}
				mu.Lock()
				ops, failed = ops+f.ops, failed+f.failed
				mu.Unlock()
			}(seed + int64(i) + 1)
		}
		farms.Wait()
		close(stop)
		bg.Wait()
		s.hook = nil
		t.Logf("%d operations (%d failed as expected), %d folds that merged rows (%d failed by injection), %d checks during the mix (%s each); faults injected: %v",
			ops, failed, folds.Load(), foldFaults, checks.Load(), checkTime/time.Duration(max(checks.Load(), 1)), injected)
		if injected[stepJournal] == 0 || injected[stepCommit] == 0 || injected[stepFold] == 0 || checks.Load() < 5 {
			t.Errorf("the mix proves little: faults %v, %d checks", injected, checks.Load())
		}
		if diffs, err := s.CheckTotals(ctx); err != nil || len(diffs) != 0 {
			t.Fatalf("after the mix, before the last fold: %v %v", diffs, err)
		}
		if _, err := s.FoldAll(ctx); err != nil {
			t.Fatal(err)
		}
		if n := journalRows(t, s); n != 0 {
			t.Errorf("%d journal rows left after FoldAll", n)
		}
		if diffs, err := s.CheckTotals(ctx); err != nil || len(diffs) != 0 {
			t.Fatalf("after the last fold: %v %v", diffs, err)
		}
	})
}

// foldChildEnv names the database a re-executed test binary folds in
// TestFoldKilledMidway.
const foldChildEnv = "KILN_TEST_FOLD_CHILD_DSN"

// TestFoldKilledMidway kills (SIGKILL) a process in the middle of a fold —
// totals merged, journal rows taken, not committed — and checks that
// nothing of it remains: the journal still holds its rows, the recount
// finds no difference, the next fold merges everything once. While the
// dying fold holds PostgreSQL's fold lock, another fold finds it busy and a
// writer does not wait for it.
func TestFoldKilledMidway(t *testing.T) {
	if dsn := os.Getenv(foldChildEnv); dsn != "" {
		foldUntilKilled(dsn)
		return
	}
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
		before := dbState(t, s)
		snap, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rows := journalRows(t, s)

		child := exec.Command(os.Args[0], "-test.run=^TestFoldKilledMidway$")
		child.Env = append(os.Environ(), foldChildEnv+"="+dsn)
		child.Stderr = os.Stderr
		out, err := child.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		killed := false
		defer func() {
			if !killed {
				child.Process.Kill()
				child.Wait()
			}
		}()
		lines := bufio.NewScanner(out)
		for lines.Scan() && lines.Text() != "mid-fold" {
		}
		if lines.Text() != "mid-fold" {
			t.Fatalf("the child never reached the middle of a fold: %v", lines.Err())
		}

		if s.Dialect() == Postgres {
			if res, err := s.Fold(ctx); err != nil || !res.Busy {
				t.Errorf("a fold while another is under way: %+v %v, want busy", res, err)
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := s.SubmitWorkRequest(wctx, &model.WorkRequest{TaskType: model.TaskServer, TaskName: "noop", WorkspaceID: f.ws.ID})
			cancel()
			if err != nil {
				t.Errorf("a write during a fold: %v", err)
			}
			before = dbState(t, s)
			rows = journalRows(t, s)
			if snap, err = s.Snapshot(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if diffs, err := s.CheckTotals(ctx); err != nil || len(diffs) != 0 {
			t.Errorf("during the child's fold: %v %v", diffs, err)
		}

		if err := child.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		killed = true
		if err := child.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("child: %v, want killed", err)
		}

		if after := dbState(t, s); after != before {
			t.Fatalf("a killed fold left a trace:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if n := journalRows(t, s); n != rows || n == 0 {
			t.Fatalf("journal rows: %d after the killed fold, %d before", n, rows)
		}
		if diffs, err := s.CheckTotals(ctx); err != nil || len(diffs) != 0 {
			t.Fatalf("after the killed fold: %v %v", diffs, err)
		}
		fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if n, err := s.FoldAll(fctx); err != nil || n != int64(rows) {
			t.Fatalf("fold after the kill merged %d of %d rows: %v", n, rows, err)
		}
		if diffs, err := s.CheckTotals(ctx); err != nil || len(diffs) != 0 {
			t.Fatalf("after folding again: %v %v", diffs, err)
		}
		after, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := totalsText(snap.Totals), totalsText(after.Totals); a != b {
			t.Errorf("the figures changed:\n%s\n%s", a, b)
		}
	})
}

// foldUntilKilled is the child of TestFoldKilledMidway: it folds, says
// "mid-fold" once the totals are merged, and waits to be killed.
func foldUntilKilled(dsn string) {
	s, err := Open(context.Background(), dsn)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s.hook = func(step string) bool {
		if step == stepFold {
			fmt.Println("mid-fold")
			select {}
		}
		return false
	}
	_, err = s.Fold(context.Background())
	fmt.Fprintln(os.Stderr, "the fold returned:", err)
	os.Exit(2)
}

// TestJournalKeepsZeroAndGroups: a label set created and emptied before
// any fold still reports 0, before and after the fold; label sets only the
// journal knows come grouped with their family; and each distinct label
// set is decoded once: two snapshots share its Labels.
func TestJournalKeepsZeroAndGroups(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		f := newAtomicityFarm(t, s)
		if _, err := s.FoldAll(ctx); err != nil {
			t.Fatal(err)
		}
		// a new label set (amd64), then gone; another (arm64) stays
		var ids []int64
		for _, arch := range []string{"amd64", "arm64"} {
			wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID,
				Data: json.RawMessage(`{"host_architecture": "` + arch + `"}`)}
			if err := s.SubmitWorkRequest(ctx, wr); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, wr.ID)
		}
		if _, err := s.AbortWorkRequest(ctx, ids[0], "test", nil); err != nil {
			t.Fatal(err)
		}
		check := func(when string) *Snapshot {
			snap, err := s.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int64{}
			seen := map[string]bool{}
			last := ""
			for _, tot := range snap.Totals {
				if tot.Family != last && seen[tot.Family] {
					t.Errorf("%s: family %s is split", when, tot.Family)
				}
				seen[tot.Family], last = true, tot.Family
				if tot.Family == "work_requests" {
					got[tot.Labels["host_architecture"]+"/"+tot.Labels["status"]] = tot.Value
				}
			}
			want := map[string]int64{"amd64/pending": 0, "amd64/aborted": 1, "arm64/pending": 1}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: work_requests %v, want %v", when, got, want)
			}
			return snap
		}
		first := check("before folding")
		if _, err := s.FoldAll(ctx); err != nil {
			t.Fatal(err)
		}
		second := check("after folding")
		shared := 0
		for _, a := range first.Totals {
			for _, b := range second.Totals {
				if a.Family == b.Family && reflect.DeepEqual(a.Labels, b.Labels) {
					if reflect.ValueOf(a.Labels).Pointer() != reflect.ValueOf(b.Labels).Pointer() {
						t.Errorf("%s %v decoded twice", a.Family, a.Labels)
					}
					if a.Set == 0 || a.Set != b.Set {
						t.Errorf("%s %v numbered %d, then %d", a.Family, a.Labels, a.Set, b.Set)
					}
					shared++
				}
			}
		}
		numbered := map[uint32]string{}
		for _, tot := range second.Totals {
			k := key(tot.Family, tot.Labels)
			if other, dup := numbered[tot.Set]; dup {
				t.Errorf("%s%s and %s share number %d", k.family, k.labels, other, tot.Set)
			}
			numbered[tot.Set] = k.family + k.labels
		}
		if shared != len(second.Totals) {
			t.Errorf("%d of %d label sets shared between snapshots", shared, len(second.Totals))
		}
	})
}

// TestLedgers: a family kept in a ledger of its own goes through the same
// journal and fold into its own table, and never shows in the public
// metrics' snapshot — the way the dashboard's rollups are meant to be
// kept.
func TestLedgers(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.db.Exec(`CREATE TABLE test_rollups (family TEXT NOT NULL, labels TEXT NOT NULL, value BIGINT NOT NULL,
			PRIMARY KEY (family, labels))`); err != nil {
			t.Fatal(err)
		}
		s.ledgers = append(s.ledgers, ledger{table: "test_rollups", families: []string{"task_runs", "task_duration_sum"}})
		f := newAtomicityFarm(t, s)
		for i := 0; i < 3; i++ {
			if err := s.inTx(ctx, func(t *tx) error {
				l := Labels{"hour": "2026-12-01T10", "workspace_id": itoa(f.ws.ID), "task_name": "sbuild", "result": "success"}
				t.add(key("task_runs", l), 1)
				delete(l, "result")
				t.add(key("task_duration_sum", l), 90)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		rollups := func() map[string]int64 {
			var out map[string]int64
			if err := s.readTx(ctx, func(t *tx) error {
				ts, err := t.ledgerTotals(ctx, s.ledgers[len(s.ledgers)-1])
				out = map[string]int64{}
				for _, tot := range ts {
					out[tot.Family] += tot.Value
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			return out
		}
		want := map[string]int64{"task_runs": 3, "task_duration_sum": 270}
		for _, when := range []string{"before folding", "after folding"} {
			if got := rollups(); !reflect.DeepEqual(got, want) {
				t.Errorf("%s: rollups %v, want %v", when, got, want)
			}
			snap, err := s.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, tot := range snap.Totals {
				if strings.HasPrefix(tot.Family, "task_") {
					t.Errorf("%s: the public snapshot carries %s", when, tot.Family)
				}
			}
			if diffs, err := s.CheckTotals(ctx); err != nil || len(diffs) != 0 {
				t.Errorf("%s: %v %v", when, diffs, err)
			}
			if _, err := s.FoldAll(ctx); err != nil {
				t.Fatal(err)
			}
		}
		var n int
		if err := s.db.QueryRow("SELECT COUNT(*) FROM test_rollups").Scan(&n); err != nil || n != 2 {
			t.Errorf("test_rollups holds %d rows (%v), want 2", n, err)
		}
		if err := s.db.QueryRow("SELECT COUNT(*) FROM metric_totals WHERE family LIKE 'task_%'").Scan(&n); err != nil || n != 0 {
			t.Errorf("metric_totals holds %d rollup rows (%v)", n, err)
		}
	})
}

// TestJournalStaysSmall: entries are inserted once and deleted once by a
// fold; the folder vacuums the journal on PostgreSQL, so that the table
// does not keep growing until autovacuum comes by (which here it does not:
// it is off for the table).
func TestJournalStaysSmall(t *testing.T) {
	dsn := testdb.Postgres(t)
	ctx := context.Background()
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.db.Exec("ALTER TABLE metric_journal SET (autovacuum_enabled = false)"); err != nil {
		t.Fatal(err)
	}
	entry := `[["artifacts","{\"category\":\"debian:binary-package\",\"scope_id\":\"1\"}",1],` +
		`["artifact_file_size","{\"category\":\"debian:binary-package\",\"scope_id\":\"1\"}",123456789]]`
	var size int64
	for i := 0; i < 40; i++ {
		if _, err := s.db.Exec("INSERT INTO metric_journal (entries) SELECT $1 FROM generate_series(1, 500)", entry); err != nil {
			t.Fatal(err)
		}
		if _, err := s.FoldAll(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.db.QueryRow("SELECT pg_relation_size('metric_journal')").Scan(&size); err != nil {
			t.Fatal(err)
		}
	}
	// 20,000 entries of ~180 bytes went through; without vacuuming the
	// table holds them all (~4 MB)
	if size > 1<<20 {
		t.Errorf("the journal takes %d bytes after 20,000 entries went through it", size)
	}
	var v int64
	if err := s.db.QueryRow("SELECT value FROM metric_totals WHERE family = 'artifacts'").Scan(&v); err != nil || v != 20000 {
		t.Errorf("artifacts total %d (%v), want 20000", v, err)
	}
}

// TestJournalShrinksAfterBacklog: a backlog bigger than one fold takes
// (a server that was down, a correction of every total) grows the journal
// table; once it is folded, the table gives its empty pages back, or every
// fold and every snapshot would read through them.
func TestJournalShrinksAfterBacklog(t *testing.T) {
	dsn := testdb.Postgres(t)
	ctx := context.Background()
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.db.Exec("ALTER TABLE metric_journal SET (autovacuum_enabled = false)"); err != nil {
		t.Fatal(err)
	}
	// entries of about 1 kB: the backlog takes more than journalShrinkBytes
	entry := `[["artifacts","{\"category\":\"debian:binary-package\",\"scope_id\":\"1\"}",1],` +
		`["artifacts","{\"category\":\"` + strings.Repeat("x", 1000) + `\",\"scope_id\":\"1\"}",0]]`
	const backlog = 3*foldBatch + 10
	size := func() int64 {
		t.Helper()
		var n int64
		if err := s.db.QueryRow("SELECT pg_relation_size('metric_journal')").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// a store shrinks the journal at its first fold, whatever it saw; the
	// second backlog is one this store folds itself
	for round := 1; round <= 2; round++ {
		if _, err := s.db.Exec("INSERT INTO metric_journal (entries) SELECT $1 FROM generate_series(1, $2)", entry, backlog); err != nil {
			t.Fatal(err)
		}
		before := size()
		if before <= journalShrinkBytes {
			t.Fatalf("the backlog takes %d bytes, no more than journalShrinkBytes", before)
		}
		if n, err := s.FoldAll(ctx); err != nil || n != backlog {
			t.Fatalf("round %d: folded %d (%v), want %d", round, n, err, backlog)
		}
		if after := size(); after > 64<<10 {
			t.Errorf("round %d: the journal takes %d bytes once its backlog (%d bytes) is folded", round, after, before)
		}
	}
	var v int64
	if err := s.db.QueryRow("SELECT value FROM metric_totals WHERE family = 'artifacts'").Scan(&v); err != nil || v != 2*backlog {
		t.Errorf("artifacts total %d (%v), want %d", v, err, 2*backlog)
	}
}

// countingFolder reports More for its first more calls.
type countingFolder struct {
	mu    sync.Mutex
	calls int
	more  int
}

func (c *countingFolder) Fold(context.Context) (FoldResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return FoldResult{Entries: 1, More: c.calls <= c.more}, nil
}

// TestFoldEvery: a tick folds until the journal is drained (no More),
// every fold is observed, and the loop ends with its context.
func TestFoldEvery(t *testing.T) {
	f := &countingFolder{more: 2}
	ctx, cancel := context.WithCancel(context.Background())
	observed := make(chan FoldResult, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		FoldEvery(ctx, f, time.Hour/2, func(r FoldResult, _ time.Duration, err error) { observed <- r })
	}()
	select {
	case <-observed:
		t.Fatal("folded before the first tick")
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	<-done

	f = &countingFolder{more: 2}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go FoldEvery(ctx, f, time.Millisecond, func(r FoldResult, _ time.Duration, err error) { observed <- r })
	for i, want := range []bool{true, true, false} {
		if r := <-observed; r.More != want {
			t.Fatalf("fold %d: More %v, want %v", i, r.More, want)
		}
	}
}
