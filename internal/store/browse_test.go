package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestBrowseWalksEveryMatchOnce walks the dashboard's lists page by page,
// with every kind of filter and pages and walks smaller than the list, and
// holds each walk to the list computed from all rows: every match once,
// newest first (ties by id), whatever the page boundaries — including
// short (Partial) pages where a walk found too few matches.
func TestBrowseWalksEveryMatchOnce(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		other := &model.Workspace{Name: "other", ScopeID: f.ws.ScopeID, Public: true}
		must(t, f.s.Workspaces().Create(ctx, other))
		clock := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
		f.s.SetClock(func() time.Time { return clock })
		archs := []string{"amd64", "arm64", "i386"}
		tasks := []string{"sbuild", "lintian"}
		for i := range 40 {
			if i%3 != 0 { // some requests share their creation time
				clock = clock.Add(time.Minute)
			}
			ws := f.ws.ID
			if i%5 == 4 {
				ws = other.ID
			}
			wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: tasks[i%2], WorkspaceID: ws, CreatedBy: &f.admin,
				Data: json.RawMessage(fmt.Sprintf(`{"host_architecture": %q}`, archs[i%3]))}
			must(t, f.s.SubmitWorkRequest(ctx, wr))
		}
		// finish some: the amd64 worker takes amd64 and i386 work
		for i := range 8 {
			wr, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
			must(t, err)
			res := model.ResultSuccess
			if i%3 == 0 {
				res = model.ResultFailure
			}
			_, err = f.s.CompleteWorkRequest(ctx, wr.ID, f.amd64.ID, store.Completion{Result: res})
			must(t, err)
		}
		wf := &model.WorkRequest{TaskName: "sequence", WorkspaceID: f.ws.ID, CreatedBy: &f.admin}
		must(t, f.s.SubmitWorkflow(ctx, wf, []store.WorkflowStep{{Request: &model.WorkRequest{TaskType: model.TaskWorker,
			TaskName: "sbuild", Data: json.RawMessage(`{"host_architecture": "arm64"}`)}}}))
		running, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)

		all, err := f.s.WorkRequests().List(ctx, store.Query{Limit: store.MaxPageSize})
		must(t, err)
		from, to := time.Date(2026, 11, 1, 12, 5, 0, 0, time.UTC), time.Date(2026, 11, 1, 12, 20, 0, 0, time.UTC)
		cases := []struct {
			name string
			b    store.Browse
			keep func(wr model.WorkRequest) bool
		}{
			{"all", store.Browse{}, func(model.WorkRequest) bool { return true }},
			{"workflows", store.Browse{Workflows: true}, func(wr model.WorkRequest) bool {
				return wr.TaskType == model.TaskWorkflow && wr.ParentID == nil
			}},
			{"status", store.Browse{Status: model.StatusCompleted}, func(wr model.WorkRequest) bool { return wr.Status == model.StatusCompleted }},
			{"task", store.Browse{TaskName: "lintian"}, func(wr model.WorkRequest) bool { return wr.TaskName == "lintian" }},
			{"status and task", store.Browse{Status: model.StatusPending, TaskName: "sbuild"}, func(wr model.WorkRequest) bool {
				return wr.Status == model.StatusPending && wr.TaskName == "sbuild"
			}},
			{"architecture", store.Browse{Architecture: "i386"}, func(wr model.WorkRequest) bool {
				return store.ParseWorkerTaskData(wr.Data).HostArchitecture == "i386"
			}},
			{"result", store.Browse{Result: model.ResultFailure}, func(wr model.WorkRequest) bool { return wr.Result == model.ResultFailure }},
			{"worker", store.Browse{WorkerID: f.amd64.ID, TaskName: "sbuild"}, func(wr model.WorkRequest) bool {
				return wr.WorkerID != nil && *wr.WorkerID == f.amd64.ID && wr.TaskName == "sbuild"
			}},
			{"time range", store.Browse{From: from, To: to}, func(wr model.WorkRequest) bool {
				return !wr.CreatedAt.Before(from) && wr.CreatedAt.Before(to)
			}},
			{"time range and architecture", store.Browse{From: from, To: to, Architecture: "amd64"}, func(wr model.WorkRequest) bool {
				return !wr.CreatedAt.Before(from) && wr.CreatedAt.Before(to) && store.ParseWorkerTaskData(wr.Data).HostArchitecture == "amd64"
			}},
			{"nothing", store.Browse{Status: model.StatusBlocked}, func(model.WorkRequest) bool { return false }},
		}
		for _, c := range cases {
			for _, sizes := range [][2]int{{3, 4}, {1, 1}, {100, 0}} {
				t.Run(fmt.Sprintf("%s/limit %d scan %d", c.name, sizes[0], sizes[1]), func(t *testing.T) {
					var want []int64
					for _, wr := range sortedNewestFirst(all) {
						if wr.WorkspaceID == f.ws.ID && c.keep(wr) {
							want = append(want, wr.ID)
						}
					}
					b := c.b
					b.WorkspaceID, b.Limit, b.Scan = f.ws.ID, sizes[0], sizes[1]
					var got []int64
					for pages := 0; ; pages++ {
						if pages > 100 {
							t.Fatal("the walk does not end")
						}
						p, err := f.s.BrowseWorkRequests(ctx, b)
						must(t, err)
						if len(p.Items) > b.Limit || len(p.Items) < b.Limit && p.Next != nil && !p.Partial {
							t.Fatalf("page of %d items with limit %d, next %v, partial %v", len(p.Items), b.Limit, p.Next, p.Partial)
						}
						for _, wr := range p.Items {
							got = append(got, wr.ID)
						}
						if p.Next == nil {
							break
						}
						b.Before = p.Next
					}
					if !slices.Equal(got, want) {
						t.Fatalf("walk gave %v, want %v", got, want)
					}
				})
			}
		}
		if running.TaskType != model.TaskWorker {
			t.Fatalf("claimed %+v", running)
		}
	})
}

func sortedNewestFirst(wrs []model.WorkRequest) []model.WorkRequest {
	out := slices.Clone(wrs)
	slices.SortFunc(out, func(a, b model.WorkRequest) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return int(b.ID - a.ID)
	})
	return out
}

// TestBrowseHidesWhatTheViewerCannotSee: the lists of a private workspace,
// its workflows' steps and what its requests run on answer as for a
// workspace that does not exist.
func TestBrowseHidesWhatTheViewerCannotSee(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		priv := &model.Workspace{Name: "embargoed", ScopeID: f.ws.ScopeID}
		must(t, f.s.Workspaces().Create(ctx, priv))
		u := &model.User{Username: "bob", Active: true}
		must(t, f.s.Users().Create(ctx, u))
		bob := &store.Viewer{UserID: u.ID}
		wf := &model.WorkRequest{TaskName: "sequence", WorkspaceID: priv.ID, CreatedBy: &f.admin}
		must(t, f.s.SubmitWorkflow(ctx, wf, []store.WorkflowStep{{Request: &model.WorkRequest{TaskType: model.TaskWorker,
			TaskName: "sbuild", Data: json.RawMessage(`{"host_architecture": "amd64"}`)}}}))
		step, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		must(t, err)

		if _, err := f.s.BrowseWorkRequests(ctx, store.Browse{WorkspaceID: priv.ID, Viewer: bob}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("bob browses the private workspace: %v", err)
		}
		if _, err := f.s.WorkflowChildren(ctx, wf.ID, bob); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("bob reads the private workflow's steps: %v", err)
		}
		on, err := f.s.RunningOn(ctx, []int64{f.amd64.ID}, bob)
		must(t, err)
		if len(on) != 0 {
			t.Fatalf("bob sees what the worker runs in the private workspace: %+v", on)
		}
		// the admin sees them all
		p, err := f.s.BrowseWorkRequests(ctx, store.Browse{WorkspaceID: priv.ID, Viewer: &store.Viewer{UserID: f.admin, Admin: true}})
		must(t, err)
		if len(p.Items) != 2 {
			t.Fatalf("admin sees %d requests, want the workflow and its step", len(p.Items))
		}
		kids, err := f.s.WorkflowChildren(ctx, wf.ID, nil)
		must(t, err)
		if len(kids) != 1 || kids[0].ID != step.ID {
			t.Fatalf("steps %+v, want %d", kids, step.ID)
		}
		on, err = f.s.RunningOn(ctx, []int64{f.amd64.ID, f.arm64.ID}, nil)
		must(t, err)
		if len(on) != 1 || on[f.amd64.ID].ID != step.ID {
			t.Fatalf("running on: %+v", on)
		}
		workers, err := f.s.BrowseWorkers(ctx, store.WorkerFilter{Limit: 2})
		must(t, err)
		if len(workers) != 2 || !workers[0].Busy || workers[1].Busy {
			t.Fatalf("first page of workers: %+v", workers)
		}
		more, err := f.s.BrowseWorkers(ctx, store.WorkerFilter{After: workers[1].ID})
		must(t, err)
		if len(more) != 1 || more[0].WorkerType != model.WorkerServer {
			t.Fatalf("second page of workers: %+v", more)
		}
	})
}

func TestCursorRoundTrip(t *testing.T) {
	c := store.Cursor{CreatedAt: time.UnixMicro(1764590400123456).UTC(), ID: 42}
	got, err := store.ParseCursor(c.String())
	if err != nil || got != c {
		t.Fatalf("%s → %+v, %v", c, got, err)
	}
	for _, bad := range []string{"", "1", "x.2", "1.x", "1.0", "1.-3"} {
		if _, err := store.ParseCursor(bad); err == nil {
			t.Errorf("ParseCursor(%q) accepted", bad)
		}
	}
}
