package store

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestNotificationOutbox: finishing a work request writes its
// notification in the same transaction — a finish that fails at its
// commit leaves none, a submission none, a store without
// KeepNotifications none — and claims hold a row for their lease only,
// then delete it or postpone it, for the claim's owner only.
func TestNotificationOutbox(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
		s.SetClock(func() time.Time { return now })
		f := newAtomicityFarm(t, s)
		submit := func() int64 {
			t.Helper()
			wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID,
				Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
			if err := s.SubmitWorkRequest(ctx, wr); err != nil {
				t.Fatal(err)
			}
			return wr.ID
		}
		pending := func() int64 {
			t.Helper()
			n, err := s.PendingNotifications(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}

		// off: no row
		if _, err := s.AbortWorkRequest(ctx, submit(), "test", nil); err != nil {
			t.Fatal(err)
		}
		if n := pending(); n != 0 {
			t.Fatalf("%d notifications written without KeepNotifications", n)
		}

		s.KeepNotifications(func(wr model.WorkRequest) string {
			return `{"id":` + itoa(wr.ID) + `,"status":"` + string(wr.Status) + `"}`
		})
		first := submit()
		if n := pending(); n != 0 {
			t.Fatalf("a submission wrote %d notifications", n)
		}
		fired := failOnce(s, stepCommit)
		_, err = s.AbortWorkRequest(ctx, first, "test", nil)
		s.hook = nil
		if !fired() || err == nil || !strings.Contains(err.Error(), "fault injected") {
			t.Fatalf("abort with a fault at commit: %v", err)
		}
		if n := pending(); n != 0 {
			t.Fatalf("a finish rolled back left %d notifications", n)
		}
		if _, err := s.AbortWorkRequest(ctx, first, "test", nil); err != nil {
			t.Fatal(err)
		}
		second := submit()
		if _, err := s.AbortWorkRequest(ctx, second, "test", nil); err != nil {
			t.Fatal(err)
		}
		if n := pending(); n != 2 {
			t.Fatalf("%d notifications after two finishes, want 2", n)
		}

		claim := func(owner string, limit int) []Notification {
			t.Helper()
			ns, err := s.ClaimNotifications(ctx, owner, time.Minute, limit)
			if err != nil {
				t.Fatal(err)
			}
			return ns
		}
		a := claim("a", 1)
		if len(a) != 1 || a[0].WorkRequestID != first || a[0].Payload != `{"id":`+itoa(first)+`,"status":"aborted"}` || a[0].Attempts != 1 {
			t.Fatalf("a's claim: %+v", a)
		}
		b := claim("b", 10)
		if len(b) != 1 || b[0].WorkRequestID != second {
			t.Fatalf("b's claim took %+v, want only the row a does not hold", b)
		}
		if len(claim("c", 10)) != 0 {
			t.Fatal("a held row claimed again")
		}
		// b fails and postpones; a dies: its row comes due again after
		// the lease
		if ok, err := s.PostponeNotification(ctx, b[0].ID, "b", now.Add(2*time.Minute), false, "x"); !ok || err != nil {
			t.Fatalf("postpone: %v %v", ok, err)
		}
		now = now.Add(time.Minute)
		c := claim("c", 10)
		if len(c) != 1 || c[0].ID != a[0].ID || c[0].Attempts != 2 {
			t.Fatalf("after a's lease: %+v", c)
		}
		if ok, err := s.DeleteNotification(ctx, a[0].ID, "a"); ok || err != nil {
			t.Fatalf("a deleted a row c holds: %v %v", ok, err)
		}
		if ok, err := s.DeleteNotification(ctx, c[0].ID, "c"); !ok || err != nil {
			t.Fatalf("c's delete: %v %v", ok, err)
		}
		now = now.Add(time.Minute)
		d := claim("d", 10)
		if len(d) != 1 || d[0].ID != b[0].ID || d[0].Attempts != 2 || d[0].Delivered != "x" {
			t.Fatalf("the postponed row: %+v", d)
		}
		// a stopping replica gives its row back without counting it
		if ok, err := s.PostponeNotification(ctx, d[0].ID, "d", now, true, "x"); !ok || err != nil {
			t.Fatalf("give back: %v %v", ok, err)
		}
		if e := claim("e", 10); len(e) != 1 || e[0].Attempts != 2 {
			t.Fatalf("the row given back: %+v", e)
		}
		if n := pending(); n != 1 {
			t.Fatalf("%d notifications left, want 1", n)
		}
		if _, err := s.ClaimNotifications(ctx, "", time.Minute, 1); err == nil {
			t.Fatal("a claim without an owner")
		}
	})
}
