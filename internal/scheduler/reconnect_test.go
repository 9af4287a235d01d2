package scheduler

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/runner/protocol"
	"github.com/kiln-build/kiln/internal/testdb"
)

// hello opens the session, saying which requests the runner still holds,
// and returns the welcome.
func (r *runnerConn) hello(running ...int64) protocol.Welcome {
	r.t.Helper()
	r.send(protocol.TypeHello, protocol.Hello{Metadata: model.WorkerMetadata{Architectures: []string{"amd64"}}, Running: running})
	var w protocol.Welcome
	r.expect(protocol.TypeWelcome, &w)
	return w
}

// task says ready and returns the task the server hands over.
func (r *runnerConn) task() model.WorkRequest {
	r.t.Helper()
	r.send(protocol.TypeReady, nil)
	var task protocol.Task
	r.expect(protocol.TypeTask, &task)
	return task.WorkRequest
}

// result reports a success and returns the server's ack.
func (r *runnerConn) result(id int64) protocol.Ack {
	r.t.Helper()
	r.send(protocol.TypeResult, protocol.Result{WorkRequest: id, Result: model.ResultSuccess})
	var ack protocol.Ack
	r.expect(protocol.TypeAck, &ack)
	return ack
}

// hangUp drops the connection and waits until the server has ended the
// session, so that the worker may connect again.
func (f *clockedFarm) hangUp(t *testing.T, r *runnerConn) {
	t.Helper()
	r.conn.CloseNow()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.s.mu.Lock()
		_, live := f.s.sessions[f.worker.ID]
		f.s.mu.Unlock()
		if !live {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not end the session of a closed connection")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSessionReconnects pins what a runner's reconnection does to the
// request it held: a runner back in time that still runs it keeps it
// (welcome.keep) and its result counts; a runner back without it (it
// restarted) loses it to the queue with a retry counted, and a result of
// the lost run is refused as gone; a runner that says it is idle while
// the server thinks it holds a request (the task message was lost) gets
// that request requeued, and handed to it again.
func TestSessionReconnects(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newClockedFarm(t, dsn)
		r := f.dial(t)
		r.hello()
		if got := r.task(); got.ID != f.wr.ID {
			t.Fatalf("task %d, want %d", got.ID, f.wr.ID)
		}
		f.hangUp(t, r)
		f.assigned(t) // the connection dropped; the request waits for the timeout

		r = f.dial(t)
		if w := r.hello(f.wr.ID); len(w.Keep) != 1 || w.Keep[0] != f.wr.ID {
			t.Fatalf("a runner back with its request was told to keep %v", w.Keep)
		}
		f.holds(t)
		if ack := r.result(f.wr.ID); ack.Error != "" || ack.Gone {
			t.Fatalf("the kept request's result: %+v", ack)
		}
		if wr, _ := f.st.WorkRequests().Get(ctx, f.wr.ID, nil); wr.Status != model.StatusCompleted || wr.Retries != 0 {
			t.Fatalf("the kept request is %s after %d retries", wr.Status, wr.Retries)
		}

		next := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.wr.WorkspaceID, MaxRetries: 3,
			Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
		must(t, f.st.SubmitWorkRequest(ctx, next))
		if got := r.task(); got.ID != next.ID {
			t.Fatalf("task %d, want %d", got.ID, next.ID)
		}
		f.hangUp(t, r)
		r = f.dial(t)
		if w := r.hello(); len(w.Keep) != 0 {
			t.Fatalf("a restarted runner was told to keep %v", w.Keep)
		}
		if wr, _ := f.st.WorkRequests().Get(ctx, next.ID, nil); wr.Status != model.StatusPending || wr.Retries != 1 {
			t.Fatalf("the request of a restarted runner is %s after %d retries, want pending after 1", wr.Status, wr.Retries)
		}
		if ack := r.result(next.ID); !ack.Gone {
			t.Fatalf("a result of the lost run was not refused as gone: %+v", ack)
		}

		if got := r.task(); got.ID != next.ID || got.Retries != 1 {
			t.Fatalf("task %d after %d retries, want %d after 1", got.ID, got.Retries, next.ID)
		}
		if got := r.task(); got.ID != next.ID || got.Retries != 2 {
			t.Fatalf("after a ready while holding it: task %d after %d retries, want %d after 2", got.ID, got.Retries, next.ID)
		}
	})
}

// TestServerWorkerRequeuesItsPreviousLife: the server's in-process worker
// keeps its name across restarts, so a restarted server requeues the
// Server task its previous life was running; a replica with another name
// leaves it alone.
func TestServerWorkerRequeuesItsPreviousLife(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newClockedFarm(t, dsn)
		first, err := f.s.registerServerWorker(ctx)
		must(t, err)
		wr := &model.WorkRequest{TaskType: model.TaskServer, TaskName: "noop", WorkspaceID: f.wr.WorkspaceID, MaxRetries: 3}
		must(t, f.st.SubmitWorkRequest(ctx, wr))
		claim := func() {
			t.Helper()
			if got, err := f.st.ClaimWorkRequest(ctx, first.ID); err != nil || got.ID != wr.ID {
				t.Fatalf("the server worker claimed %v (%v), want %d", got, err, wr.ID)
			}
		}
		claim()
		register := func(name string) *model.Worker {
			t.Helper()
			s, err := New(f.st, Config{HeartbeatTimeout: timeout, ServerWorkerName: name})
			must(t, err)
			w, err := s.registerServerWorker(ctx)
			must(t, err)
			return w
		}

		if w := register("server-replica"); w.ID == first.ID {
			t.Fatal("a replica with another name took over the server worker")
		}
		if got, _ := f.st.WorkRequests().Get(ctx, wr.ID, nil); got.Status != model.StatusRunning {
			t.Fatalf("a replica starting made the running Server task %s", got.Status)
		}
		if w := register("server-test"); w.ID != first.ID {
			t.Fatalf("the restarted server registered worker %d, want its own %d", w.ID, first.ID)
		}
		got, err := f.st.WorkRequests().Get(ctx, wr.ID, nil)
		must(t, err)
		if got.Status != model.StatusPending || got.WorkerID != nil || got.Retries != 1 {
			t.Fatalf("the interrupted Server task is %s on %v after %d retries, want pending after 1", got.Status, got.WorkerID, got.Retries)
		}
	})
}
