package livelog_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/livelog"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/signal"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// runningRequest makes a farm of one worker running one request, and
// returns the request's id.
func runningRequest(t testing.TB, st *store.SQL) int64 {
	t.Helper()
	ctx := context.Background()
	if _, err := st.Bootstrap(ctx, "kiln_livelog_admin", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	sc := &model.Scope{Name: "debian"}
	must(t, st.Scopes().Create(ctx, sc))
	ws := &model.Workspace{Name: "main", ScopeID: sc.ID, Public: true}
	must(t, st.Workspaces().Create(ctx, ws))
	w := &model.Worker{Name: "runner", WorkerType: model.WorkerExternal, Enabled: true}
	must(t, st.Workers().Create(ctx, w))
	_, _, err := st.ConnectWorker(ctx, w.ID, model.WorkerMetadata{Architectures: []string{"amd64"}})
	must(t, err)
	wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: ws.ID,
		Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
	must(t, st.SubmitWorkRequest(ctx, wr))
	if _, err := st.ClaimWorkRequest(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	return wr.ID
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// relayOn starts a bus and a relay over st, as one server process does:
// a PostgreSQL bus listening on its own connection, or the in-process one
// of SQLite.
func relayOn(t *testing.T, st *store.SQL, dsn string, sweep time.Duration) *livelog.Relay {
	t.Helper()
	var bus *signal.Bus
	var err error
	if st.Dialect() == store.Postgres {
		bus, err = signal.NewPostgres(dsn, st.DB(), signal.Options{})
	} else {
		bus, err = signal.NewLocal(signal.Options{})
	}
	must(t, err)
	r, err := livelog.New(st, bus, livelog.Options{SweepInterval: sweep})
	must(t, err)
	// the bus's first resync wakes every waiting reader (signals may
	// have been missed before it listened): past it, a wake-up means the
	// log grew
	resynced := make(chan struct{})
	var once sync.Once
	bus.OnResync(func() { once.Do(func() { close(resynced) }) })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); bus.Run(ctx) }()
	go func() { defer wg.Done(); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	select {
	case <-resynced:
	case <-time.After(10 * time.Second):
		t.Fatalf("the bus does not listen: %v", bus.Err())
	}
	return r
}

// TestFollowThroughAnotherReplica: a runner streams to replica A; a
// reader of replica B waits for the log, wakes when it grows — at once,
// not at a poll — and reads it; when the request ends the log is no
// longer live, and the sweep takes what A did not drop.
func TestFollowThroughAnotherReplica(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		stA, err := store.Open(ctx, dsn)
		must(t, err)
		defer stA.Close()
		id := runningRequest(t, stA)
		stB := stA
		if stA.Dialect() == store.Postgres {
			// another process: its own pool and its own bus
			stB, err = store.Open(ctx, dsn)
			must(t, err)
			defer stB.Close()
		}
		a := relayOn(t, stA, dsn, 50*time.Millisecond)
		b := a
		if stB != stA {
			b = relayOn(t, stB, dsn, time.Hour)
		}

		data, from, running, err := b.Read(ctx, id, 0)
		if err != nil || len(data) != 0 || from != 0 || !running {
			t.Fatalf("before any log: %q from %d, running %v, %v", data, from, running, err)
		}
		waited := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			waited <- b.Wait(wctx, id, 0)
		}()
		select {
		case err := <-waited:
			t.Fatalf("Wait returned before the log grew: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		must(t, a.Append(ctx, id, 0, 0, []byte("step 1\n")))
		select {
		case err := <-waited:
			must(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("the reader on the other replica did not wake when the log grew")
		}
		data, _, _, err = b.Read(ctx, id, 0)
		if err != nil || string(data) != "step 1\n" {
			t.Fatalf("read %q, %v", data, err)
		}
		// something past offset already: no wait
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		must(t, b.Wait(wctx, id, 3))
		cancel()
		// nothing past the end: the wait ends with its context
		wctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
		if err := b.Wait(wctx, id, 7); err != context.DeadlineExceeded {
			t.Fatalf("Wait at the end of a quiet log: %v, want the deadline", err)
		}
		cancel()

		// the request ends without A recording it (its replica died):
		// the log is not live any more, and the sweep deletes it
		_, err = stA.AbortWorkRequest(ctx, id, "test", nil)
		must(t, err)
		if _, _, running, err := b.Read(ctx, id, 0); running || err != nil {
			t.Fatalf("an aborted request's log is still live: %v", err)
		}
		wctx, cancel = context.WithTimeout(ctx, time.Second)
		must(t, b.Wait(wctx, id, 7)) // not running: at once
		cancel()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			var n int
			must(t, stA.DB().QueryRowContext(ctx, "SELECT count(*) FROM live_log_chunks").Scan(&n))
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d chunks of an ended request were not swept", n)
			}
		}
	})
}
