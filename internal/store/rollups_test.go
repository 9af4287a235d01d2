package store_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestStatisticsRecount drives work requests through every way they
// finish or come back — completion with each result, abort, retry,
// requeue after a lost runner, a workflow and its root — across hours and
// days, and holds the rollups, as readers see them before and after a
// fold, to their recount from the work requests: the keys the store
// writes in Go and the keys the recount builds in SQL are the same. Then
// it damages the rollups and has the recount find and fix the damage.
func TestStatisticsRecount(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		clock := time.Date(2026, 11, 30, 22, 40, 0, 0, time.UTC)
		f.s.SetClock(func() time.Time { return clock })
		clean := func(when string) {
			t.Helper()
			diffs, n, err := f.s.CheckStatistics(ctx, 20)
			must(t, err)
			if n != 0 {
				t.Fatalf("%s: %d rollups differ from their recount: %v", when, n, diffs)
			}
		}
		run := func(arch string, result model.Result, ran float64) *model.WorkRequest {
			t.Helper()
			wr := f.worker(t, arch)
			clock = clock.Add(7 * time.Minute)
			worker := f.amd64.ID
			if arch == "arm64" {
				worker = f.arm64.ID
			}
			got, err := f.s.ClaimWorkRequest(ctx, worker)
			must(t, err)
			if got.ID != wr.ID {
				t.Fatalf("claimed %d, want %d", got.ID, wr.ID)
			}
			clock = clock.Add(time.Duration(ran * float64(time.Second)))
			done, err := f.s.CompleteWorkRequest(ctx, wr.ID, worker, store.Completion{Result: result,
				Statistics: &model.RuntimeStatistics{Duration: ran}})
			must(t, err)
			return done
		}
		run("amd64", model.ResultSuccess, 12.5)
		run("arm64", model.ResultFailure, 0.003)
		clock = clock.Add(90 * time.Minute) // past midnight: another day
		run("amd64", model.ResultError, 4000)
		run("amd64", model.ResultSkipped, 0)
		failed := run("arm64", model.ResultFailure, 61)
		// a retry takes the failure back; the retried run counts once
		_, err := f.s.RetryWorkRequest(ctx, failed.ID, nil)
		must(t, err)
		aborted := f.worker(t, "i386")
		_, err = f.s.AbortWorkRequest(ctx, aborted.ID, "no longer needed", nil)
		must(t, err)
		// a lost runner: the request goes back to the queue
		lost := f.worker(t, "amd64")
		_, err = f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		clock = clock.Add(time.Hour)
		_, err = f.s.RequeueLostWork(ctx, time.Minute)
		must(t, err)
		_ = lost
		wf := &model.WorkRequest{TaskName: "sequence", WorkspaceID: f.ws.ID, CreatedBy: &f.admin}
		must(t, f.s.SubmitWorkflow(ctx, wf, []store.WorkflowStep{{Request: &model.WorkRequest{TaskType: model.TaskWorker,
			TaskName: "sbuild", Data: json.RawMessage(`{"host_architecture": "arm64"}`)}}}))
		_, _, err = f.s.ConnectWorker(ctx, f.arm64.ID, model.WorkerMetadata{Architectures: []string{"arm64"}})
		must(t, err)
		step, err := f.s.ClaimWorkRequest(ctx, f.arm64.ID)
		must(t, err)
		clock = clock.Add(3 * time.Second)
		_, err = f.s.CompleteWorkRequest(ctx, step.ID, f.arm64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)

		clean("before a fold")
		if _, err := f.s.FoldAll(ctx); err != nil {
			t.Fatal(err)
		}
		clean("after a fold")

		// damage: a total lost, a total made up
		db := f.s.DB()
		if _, err := db.ExecContext(ctx, "DELETE FROM statistics_totals WHERE family = 'runs_by_day' AND result = 'error'"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO statistics_totals (family, labels, value) VALUES ('requests_by_status',
			'{"status":"pending","workspace_id":"999"}', 5)`); err != nil {
			t.Fatal(err)
		}
		diffs, n, err := f.s.CheckStatistics(ctx, 20)
		must(t, err)
		if n != 2 || len(diffs) != 2 {
			t.Fatalf("the recount finds %d differences, want 2: %v", n, diffs)
		}
		fixed, err := f.s.FixStatistics(ctx)
		must(t, err)
		if fixed != 2 {
			t.Fatalf("fixed %d rollups, want 2", fixed)
		}
		clean("after the fix")
		if _, err := f.s.FoldAll(ctx); err != nil {
			t.Fatal(err)
		}
		clean("after the fix, folded")
	})
}

// TestStatisticsBackfill: rollups emptied as on a database upgraded to
// them are filled from the farm's history at the next start, once.
func TestStatisticsBackfill(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		wr := f.worker(t, "amd64")
		_, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)
		_, err = f.s.CompleteWorkRequest(ctx, wr.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
		must(t, err)
		f.worker(t, "arm64")
		_, err = f.s.FoldAll(ctx)
		must(t, err)
		if _, err := f.s.DB().ExecContext(ctx, "DELETE FROM statistics_totals"); err != nil {
			t.Fatal(err)
		}
		if _, n, _ := f.s.CheckStatistics(ctx, 0); n == 0 {
			t.Fatal("emptied rollups agree with the recount")
		}
		n, err := f.s.BackfillStatistics(ctx)
		must(t, err)
		if n == 0 {
			t.Fatal("the backfill filled nothing")
		}
		if again, err := f.s.BackfillStatistics(ctx); err != nil || again != 0 {
			t.Fatalf("a second backfill: %d, %v", again, err)
		}
		if diffs, n, err := f.s.CheckStatistics(ctx, 10); err != nil || n != 0 {
			t.Fatalf("after the backfill: %v %d %v", diffs, n, err)
		}
	})
}

// TestRollupReadsWhatTheViewerSees reads the rollups of a public and a
// private workspace as an outsider, a member and an admin.
func TestRollupReadsWhatTheViewerSees(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		now := time.Now().UTC()
		priv := &model.Workspace{Name: "embargoed", ScopeID: f.ws.ScopeID}
		must(t, f.s.Workspaces().Create(ctx, priv))
		for _, ws := range []int64{f.ws.ID, priv.ID, priv.ID} {
			wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "sbuild", WorkspaceID: ws, CreatedBy: &f.admin,
				Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
			must(t, f.s.SubmitWorkRequest(ctx, wr))
			_, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
			must(t, err)
			_, err = f.s.CompleteWorkRequest(ctx, wr.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess})
			must(t, err)
		}
		u := &model.User{Username: "bob", Active: true}
		must(t, f.s.Users().Create(ctx, u))
		m := &model.User{Username: "mia", Active: true}
		must(t, f.s.Users().Create(ctx, m))
		must(t, f.s.WorkspaceMembers().Create(ctx, &model.WorkspaceMember{WorkspaceID: priv.ID, UserID: &m.ID, Role: model.RoleViewer}))
		from := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
		for _, c := range []struct {
			who  string
			v    *store.Viewer
			runs int64
		}{{"bob", &store.Viewer{UserID: u.ID}, 1}, {"mia", &store.Viewer{UserID: m.ID}, 3}, {"admin", &store.Viewer{Admin: true}, 3}} {
			r, err := f.s.Rollup(ctx, store.RollupQuery{From: from, To: from.AddDate(0, 0, 1), Viewer: c.v})
			must(t, err)
			var runs, series int64
			for _, g := range r.Groups {
				runs += g.Runs["success"]
			}
			for _, p := range r.Series {
				series += p.Runs
			}
			if runs != c.runs || series != c.runs {
				t.Errorf("%s reads %d runs in the groups and %d in the series, want %d", c.who, runs, series, c.runs)
			}
			counts, err := f.s.StatusCounts(ctx, c.v, 0)
			must(t, err)
			var completed int64
			for _, sc := range counts {
				if sc.Status == model.StatusCompleted {
					completed += sc.N
				}
			}
			if completed != c.runs {
				t.Errorf("%s counts %d completed requests, want %d", c.who, completed, c.runs)
			}
		}
	})
}
