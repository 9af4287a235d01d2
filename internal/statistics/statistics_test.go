package statistics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/statistics"
	"github.com/kiln-build/kiln/internal/store"
)

// rollup is a Source that answers a fixed rollup, for the arithmetic of
// Compute (the store's tests hold the rollups themselves to a recount).
type rollup struct {
	r *store.Rollup
	q store.RollupQuery
}

func (s *rollup) Rollup(_ context.Context, q store.RollupQuery) (*store.Rollup, error) {
	s.q = q
	return s.r, nil
}

func counts(pairs ...int64) []int64 {
	c := make([]int64, len(statistics.Bounds)+1)
	for i := 0; i+1 < len(pairs); i += 2 {
		c[statistics.Bucket(pairs[i])] += pairs[i+1]
	}
	return c
}

// TestComputeGroups: figures add up per task, scope and workspace across
// the groups of the rollups, the success rate leaves out skipped and
// aborted runs, and the series has every day of the window.
func TestComputeGroups(t *testing.T) {
	src := &rollup{r: &store.Rollup{
		Groups: []store.RollupGroup{
			{WorkspaceID: 1, TaskType: model.TaskWorker, TaskName: "sbuild", Runs: map[string]int64{"success": 3, "failure": 1},
				Durations: counts(1e6, 3, 10e6, 1), Waits: counts(2e6, 4)},
			{WorkspaceID: 2, TaskType: model.TaskWorker, TaskName: "sbuild", Runs: map[string]int64{"error": 1, "aborted": 2},
				Durations: counts(100e6, 1), Waits: counts(2e6, 1)},
			{WorkspaceID: 3, TaskType: model.TaskWorker, TaskName: "lintian", Runs: map[string]int64{"skipped": 2},
				Durations: counts(1e4, 2), Waits: counts(1e6, 2)},
		},
		Series: []store.RollupPoint{{Period: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC).Unix(), Result: "success", Runs: 3}},
		Workspaces: map[int64]store.WorkspaceName{1: {Name: "main", ScopeID: 10, ScopeName: "debian"}, 2: {Name: "ports", ScopeID: 10, ScopeName: "debian"},
			3: {Name: "main", ScopeID: 20, ScopeName: "ubuntu"}},
	}}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	w, _ := statistics.ParseWindow("7d", now)
	r, err := statistics.Compute(context.Background(), src, &store.Viewer{UserID: 5}, w, statistics.Selection{ScopeID: 10})
	if err != nil {
		t.Fatal(err)
	}
	if src.q.ScopeID != 10 || src.q.Viewer.UserID != 5 || !src.q.From.Equal(w.From) || src.q.Hourly {
		t.Fatalf("asked the rollups %+v", src.q)
	}
	if r.Total.Runs != 9 || *r.Total.SuccessRate != 3.0/5 || r.Total.Duration.Count != 7 {
		t.Fatalf("total %+v", r.Total)
	}
	sbuild := r.Tasks[0]
	if sbuild.TaskName != "sbuild" || sbuild.Runs != 7 || *sbuild.SuccessRate != 3.0/5 || sbuild.Duration.P50.Value != time.Second ||
		sbuild.Duration.P99.Value != 100*time.Second || sbuild.Wait.P90.Value != 2*time.Second {
		t.Fatalf("sbuild %+v", sbuild)
	}
	lintian := r.Tasks[1]
	if lintian.SuccessRate != nil || lintian.Runs != 2 || lintian.Duration.P50.Value != 10*time.Millisecond {
		t.Fatalf("lintian: no verdict, two skipped runs: %+v", lintian)
	}
	if len(r.Scopes) != 2 || r.Scopes[0].Scope != "debian" || r.Scopes[0].Runs != 7 || r.Scopes[1].Runs != 2 {
		t.Fatalf("scopes %+v", r.Scopes)
	}
	if len(r.Workspaces) != 3 || len(r.WorkspaceTasks) != 3 {
		t.Fatalf("%d workspaces and %d workspace tasks", len(r.Workspaces), len(r.WorkspaceTasks))
	}
	if len(r.Series) != 7 || r.Series[5].Runs != 3 || r.Series[5].Outcomes["success"] != 3 || r.Series[6].Runs != 0 {
		t.Fatalf("series %+v", r.Series)
	}
}

// TestComputeNothing: a farm without runs in the window has empty lists,
// [] in JSON like every list of the answer, never null, and a series of
// zeros.
func TestComputeNothing(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	w, _ := statistics.ParseWindow("7d", now)
	r, err := statistics.Compute(context.Background(), &rollup{r: &store.Rollup{}}, nil, w, statistics.Selection{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, list := range []string{"tasks", "scopes", "workspaces", "workspace_tasks"} {
		if !bytes.Contains(b, []byte(`"`+list+`":[]`)) {
			t.Errorf("the statistics of nothing have no empty %s: %s", list, b)
		}
	}
	if len(r.Series) != 7 || r.Total.Runs != 0 {
		t.Fatalf("the statistics of nothing: %s", b)
	}
}

func TestWindows(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 30, 0, 0, time.UTC)
	if w, _ := statistics.ParseWindow("1d", now); w.Days() != 1 || !w.Hourly() || !w.From.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("today: %+v", w)
	}
	for _, bad := range []string{"", "7", "0d", "367d", "-1d", "7h", "d"} {
		if _, err := statistics.ParseWindow(bad, now); err == nil {
			t.Errorf("window %q accepted", bad)
		}
	}
	if w, err := statistics.Between("2026-11-01", "2026-11-30"); err != nil || w.Days() != 30 {
		t.Fatalf("November: %+v %v", w, err)
	}
	for _, bad := range [][2]string{{"2026-11-30", "2026-11-01"}, {"2026-11-01", "2027-12-01"}, {"x", "2026-11-01"}, {"2026-11-01", ""}} {
		if _, err := statistics.Between(bad[0], bad[1]); err == nil {
			t.Errorf("from %s to %s accepted", bad[0], bad[1])
		}
	}
}
