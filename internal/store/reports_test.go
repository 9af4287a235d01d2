package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestReportClaims: an interval of the report schedule is held by one
// replica at a time; another takes it over only once the holder's lease
// ran out, and nobody once its report is written; the holder that lost
// its lease cannot record the report as its own.
func TestReportClaims(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		s := open(t, dsn)
		now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
		s.SetClock(func() time.Time { return now })
		slot := now.Truncate(time.Hour)
		claim := func(owner string) store.ReportClaim {
			t.Helper()
			c, err := s.ClaimReport(ctx, slot, owner, 10*time.Minute)
			must(t, err)
			return c
		}

		if c := claim("a"); !c.Won || c.Done || c.Claims != 1 || !c.LeaseUntil.Equal(now.Add(10*time.Minute)) || !c.LastWritten.IsZero() {
			t.Fatalf("the first claim: %+v", c)
		}
		if c := claim("b"); c.Won || c.Done || !c.LeaseUntil.Equal(now.Add(10*time.Minute)) {
			t.Fatalf("a claim during a's lease: %+v", c)
		}
		now = now.Add(10 * time.Minute) // a's lease runs out: a died
		if c := claim("b"); !c.Won || c.Claims != 2 {
			t.Fatalf("a claim after a's lease: %+v", c)
		}
		if err := s.FinishReport(ctx, slot, "a", "late.json"); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("a records the report after losing its lease: %v", err)
		}
		must(t, s.FinishReport(ctx, slot, "b", "s3://reports/report.json"))
		written := now
		now = now.Add(time.Hour)
		if c := claim("a"); c.Won || !c.Done || !c.LastWritten.Equal(written) {
			t.Fatalf("a claim on a written interval: %+v", c)
		}
		if err := s.FinishReport(ctx, slot, "b", "again.json"); !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("a report recorded twice: %v", err)
		}
		if _, err := s.ClaimReport(ctx, slot, "", time.Minute); err == nil {
			t.Fatal("a claim without an owner")
		}

		// the next interval is a claim of its own; a month later the old
		// rows are forgotten
		next := slot.Add(time.Hour)
		if c, err := s.ClaimReport(ctx, next, "a", time.Minute); err != nil || !c.Won || c.Claims != 1 || !c.LastWritten.Equal(written) {
			t.Fatalf("the next interval: %+v %v", c, err)
		}
		runs, err := s.ReportRuns(ctx, time.Time{})
		must(t, err)
		if len(runs) != 2 || runs[0].ClaimedBy != "b" || runs[0].Claims != 2 || runs[0].FinishedAt == nil ||
			runs[0].WrittenTo != "s3://reports/report.json" || runs[1].FinishedAt != nil || !runs[1].Slot.Equal(next) {
			t.Fatalf("runs: %+v", runs)
		}
		later := slot.Add(31 * 24 * time.Hour)
		now = later
		if c, err := s.ClaimReport(ctx, later, "a", time.Minute); err != nil || !c.Won {
			t.Fatalf("a month later: %+v %v", c, err)
		}
		if runs, err := s.ReportRuns(ctx, time.Time{}); err != nil || len(runs) != 1 || !runs[0].Slot.Equal(later) {
			t.Fatalf("runs a month later: %+v %v", runs, err)
		}
	})
}
