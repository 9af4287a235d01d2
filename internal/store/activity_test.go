package store

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestActivitySeries: the label sets of the user-activity histograms are
// remembered as activity and identities appear, outlive them, and
// `kiln metrics recount` checks and repairs them and the activity rows.
func TestActivitySeries(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		s.SetClock(func() time.Time { clock = clock.Add(time.Second); return clock })
		if _, err := s.Bootstrap(ctx, "kiln_test", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		scope := &model.Scope{Name: "debian"}
		must(s.Scopes().Create(ctx, scope))
		ws := &model.Workspace{ScopeID: scope.ID, Name: "main", Public: true}
		must(s.Workspaces().Create(ctx, ws))
		alice := &model.User{Username: "alice", Active: true}
		must(s.Users().Create(ctx, alice))
		salsa := &model.Identity{UserID: alice.ID, Issuer: "salsa.debian.org", Subject: "a"}
		must(s.Identities().Create(ctx, salsa))
		submit := func(by int64) {
			t.Helper()
			must(s.SubmitWorkRequest(ctx, &model.WorkRequest{TaskType: model.TaskWorkflow, TaskName: "sbuild", WorkspaceID: ws.ID, CreatedBy: &by}))
		}
		submit(alice.ID)
		// an identity added after the activity gets its label set too
		must(s.Identities().Create(ctx, &model.Identity{UserID: alice.ID, Issuer: "gitlab.com", Subject: "a"}))
		// the system user's activity is never observed
		sys, err := s.Users().Lookup(ctx, SystemUsername, nil)
		must(err)
		submit(sys.ID)
		must(s.Identities().Delete(ctx, salsa.ID, nil))

		want := []ActivitySeries{
			{UserActivityFamily, scope.ID, ""},
			{IdentityActivityFamily, scope.ID, "gitlab.com"},
			{IdentityActivityFamily, scope.ID, "salsa.debian.org"},
		}
		snap, err := s.Snapshot(ctx)
		must(err)
		if !slices.Equal(snap.ActivitySeries, want) {
			t.Fatalf("remembered %+v, want %+v", snap.ActivitySeries, want)
		}
		if diffs, err := s.CheckTotals(ctx); err != nil || len(diffs) != 0 {
			t.Fatalf("recount of a consistent farm: %v %v", diffs, err)
		}

		for _, damage := range []struct{ sql, want string }{
			{"DELETE FROM activity_series WHERE issuer = 'gitlab.com'", `activity_series{"family":"user_identities_activity","issuer":"gitlab.com"`},
			{"UPDATE user_scope_activity SET last_workflow_at = 5", "user_scope_activity.last_workflow_at"},
			{"DELETE FROM user_scope_activity", "user_scope_activity.last_workflow_at"},
		} {
			if _, err := s.db.ExecContext(ctx, damage.sql); err != nil {
				t.Fatal(err)
			}
			diffs, err := s.CheckTotals(ctx)
			if err != nil || len(diffs) == 0 || !strings.Contains(diffs[0].String(), damage.want) {
				t.Fatalf("after %s: %v %v, want a difference %s", damage.sql, diffs, err, damage.want)
			}
			if _, err := s.FixTotals(ctx); err != nil {
				t.Fatal(err)
			}
			if diffs, err := s.CheckTotals(ctx); err != nil || len(diffs) != 0 {
				t.Fatalf("after fixing %s: %v %v", damage.sql, diffs, err)
			}
		}
		snap, err = s.Snapshot(ctx)
		must(err)
		if len(snap.Activity) != 1 || !snap.Activity[0].LastWorkflowAt.After(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("repaired activity %+v", snap.Activity)
		}

		// the label sets of a database that predates them are filled in
		// by the migration
		if _, err := s.db.ExecContext(ctx, "DELETE FROM activity_series"); err != nil {
			t.Fatal(err)
		}
		body, err := migrationFiles.ReadFile("migrations/0005_activity_series.sql")
		must(err)
		backfill := string(body[strings.Index(string(body), "INSERT INTO activity_series"):])
		if _, err := s.db.ExecContext(ctx, strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(backfill), ";"))); err != nil {
			t.Fatal(err)
		}
		snap, err = s.Snapshot(ctx)
		must(err)
		if !slices.Equal(snap.ActivitySeries, []ActivitySeries{{UserActivityFamily, scope.ID, ""}, {IdentityActivityFamily, scope.ID, "gitlab.com"}}) {
			t.Errorf("after the migration: %+v", snap.ActivitySeries)
		}
	})
}
