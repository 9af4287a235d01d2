package scheduler

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/runner/protocol"
	"github.com/kiln-build/kiln/internal/testdb"
)

// helloConcurrent opens a session for a runner of capacity n holding
// running, and returns the welcome.
func (r *runnerConn) helloConcurrent(n int, running ...int64) protocol.Welcome {
	r.t.Helper()
	r.send(protocol.TypeHello, protocol.Hello{Metadata: model.WorkerMetadata{Architectures: []string{"amd64"}, Concurrent: n}, Running: running})
	var w protocol.Welcome
	r.expect(protocol.TypeWelcome, &w)
	return w
}

// tasks reads n task messages and returns their requests' ids.
func (r *runnerConn) tasks(n int) []int64 {
	r.t.Helper()
	var ids []int64
	for range n {
		var task protocol.Task
		r.expect(protocol.TypeTask, &task)
		ids = append(ids, task.WorkRequest.ID)
	}
	return ids
}

// heartbeats sends a heartbeat naming tasks and waits until the server is
// done with it (see heartbeat): the cancels it causes come before the
// second echo, and are returned.
func (r *runnerConn) heartbeats(tasks ...int64) []int64 {
	r.t.Helper()
	r.send(protocol.TypeHeartbeat, protocol.Heartbeat{Tasks: tasks})
	r.expect(protocol.TypeHeartbeat, nil)
	r.send(protocol.TypeHeartbeat, protocol.Heartbeat{})
	var cancelled []int64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, b, err := r.conn.Read(ctx)
		cancel()
		must(r.t, err)
		var env protocol.Envelope
		must(r.t, json.Unmarshal(b, &env))
		switch env.Type {
		case protocol.TypeHeartbeat:
			return cancelled
		case protocol.TypeCancel:
			var c protocol.Cancel
			must(r.t, env.Decode(&c))
			cancelled = append(cancelled, c.WorkRequest)
		default:
			r.t.Fatalf("got %s %s, want heartbeat or cancel", env.Type, env.Body)
		}
	}
}

// ackAndTask reads the ack of request id and a task, in either order
// (they belong to different requests), and returns the task's request.
func (r *runnerConn) ackAndTask(id int64) int64 {
	r.t.Helper()
	var task int64
	acked := false
	for !acked || task == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, b, err := r.conn.Read(ctx)
		cancel()
		must(r.t, err)
		var env protocol.Envelope
		must(r.t, json.Unmarshal(b, &env))
		switch {
		case env.Type == protocol.TypeAck && !acked:
			var a protocol.Ack
			must(r.t, env.Decode(&a))
			if a.WorkRequest != id || a.Error != "" {
				r.t.Fatalf("ack %+v, want a plain ack of %d", a, id)
			}
			acked = true
		case env.Type == protocol.TypeTask && task == 0:
			var t protocol.Task
			must(r.t, env.Decode(&t))
			task = t.WorkRequest.ID
		default:
			r.t.Fatalf("got %s %s, want the ack of %d and a task", env.Type, env.Body, id)
		}
	}
	return task
}

// runningOn lists the requests running on the farm's worker.
func (f *clockedFarm) runningOn(t *testing.T) []int64 {
	t.Helper()
	_, running, err := f.st.TouchWorker(context.Background(), f.worker.ID)
	must(t, err)
	return running
}

// TestSessionRunsUpToItsCapacity drives a session of a runner with
// concurrent 3 by hand: it gets the three tasks it asks for and no
// more; heartbeats keep all three; a cancel stops one and leaves the
// others; a result that asks for more is followed by the next task; an
// ask beyond the capacity waits for a slot; a reconnection keeps every
// request the runner still holds, and a heartbeat after the worker was
// marked lost keeps them all too; silent past the timeout, it loses them
// all, and its next heartbeat stops each one.
func TestSessionRunsUpToItsCapacity(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newClockedFarm(t, dsn)
		submit := func() int64 {
			wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.wr.WorkspaceID, MaxRetries: 3,
				Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
			must(t, f.st.SubmitWorkRequest(ctx, wr))
			return wr.ID
		}
		queue := []int64{f.wr.ID}
		for range 4 {
			queue = append(queue, submit())
		}
		r := f.dial(t)
		if w := r.helloConcurrent(3); !slices.Contains(w.Features, protocol.FeatureConcurrent) {
			t.Fatalf("welcome features %v lack %q", w.Features, protocol.FeatureConcurrent)
		}
		r.send(protocol.TypeReady, protocol.Ready{Slots: 3})
		held := r.tasks(3)
		if !slices.Equal(held, queue[:3]) {
			t.Fatalf("tasks %v, want %v", held, queue[:3])
		}
		// nothing more was asked for: the next message answers the
		// heartbeat
		if c := r.heartbeats(held...); len(c) != 0 {
			t.Fatalf("a heartbeat about the three tasks it runs cancelled %v", c)
		}

		// heartbeats keep all three, well past one timeout
		for range 4 {
			f.clock.Advance(timeout / 2)
			r.heartbeats(held...)
			f.requeueLost(t)
		}
		if got := f.runningOn(t); !slices.Equal(got, held) {
			t.Fatalf("running %v, want %v", got, held)
		}

		// aborting one stops that one only, told by the store's hook
		_, err := f.st.AbortWorkRequest(ctx, held[0], "test", nil)
		must(t, err)
		var cancel protocol.Cancel
		r.expect(protocol.TypeCancel, &cancel)
		if cancel.WorkRequest != held[0] {
			t.Fatalf("cancel of %d, want %d", cancel.WorkRequest, held[0])
		}
		held = held[1:]
		if c := r.heartbeats(held...); len(c) != 0 {
			t.Fatalf("the others were cancelled too: %v", c)
		}

		// a result asking for more: the ack, and the next task
		r.send(protocol.TypeResult, protocol.Result{WorkRequest: held[1], Result: model.ResultSuccess, Ready: true})
		held = append(held[:1], r.ackAndTask(held[1]))
		r.send(protocol.TypeReady, protocol.Ready{Slots: 1})
		held = append(held, r.tasks(1)...)
		if want := []int64{queue[1], queue[3], queue[4]}; !slices.Equal(held, want) {
			t.Fatalf("holding %v, want %v", held, want)
		}

		// full: an ask beyond the capacity waits for a slot, which a
		// result frees
		extra := submit()
		r.send(protocol.TypeReady, protocol.Ready{Slots: 2})
		if c := r.heartbeats(held...); len(c) != 0 {
			t.Fatalf("cancelled %v", c)
		}
		if got := f.runningOn(t); !slices.Equal(got, held) {
			t.Fatalf("a full runner's ask claimed: running %v, want %v", got, held)
		}
		r.send(protocol.TypeResult, protocol.Result{WorkRequest: held[0], Result: model.ResultSuccess})
		held = append(held[1:], r.ackAndTask(held[0]))
		if held[2] != extra {
			t.Fatalf("after a slot freed the runner got %d, want %d", held[2], extra)
		}

		// a reconnection keeps every request the runner still holds
		f.hangUp(t, r)
		r = f.dial(t)
		if w := r.helloConcurrent(3, held...); !slices.Equal(w.Keep, held) {
			t.Fatalf("back with %v, told to keep %v", held, w.Keep)
		}
		if got := f.runningOn(t); !slices.Equal(got, held) {
			t.Fatalf("after the reconnection running %v, want %v", got, held)
		}
		// marked lost while still talking: a heartbeat keeps them all
		must(t, f.st.DisconnectWorker(ctx, f.worker.ID))
		if c := r.heartbeats(held...); len(c) != 0 {
			t.Fatalf("cancelled %v", c)
		}
		if got := f.runningOn(t); !slices.Equal(got, held) {
			t.Fatalf("after a heartbeat of a worker marked lost, running %v, want %v", got, held)
		}

		// silent past the timeout: all three go back to the queue, and the
		// runner is told to stop each at once (were its connection still
		// alive on some replica), and again when it next speaks
		f.clock.Advance(timeout + time.Microsecond)
		f.requeueLost(t, held...)
		var told []int64
		for range held {
			var cancel protocol.Cancel
			r.expect(protocol.TypeCancel, &cancel)
			if !strings.Contains(cancel.Reason, "heartbeats") {
				t.Fatalf("cancel %+v, want one for the runner's heartbeats", cancel)
			}
			told = append(told, cancel.WorkRequest)
		}
		if slices.Sort(told); !slices.Equal(told, held) {
			t.Fatalf("after losing %v the runner was told at once to stop %v", held, told)
		}
		if c := r.heartbeats(held...); !slices.Equal(c, held) {
			t.Fatalf("after losing %v the runner was told to stop %v", held, c)
		}
		for _, id := range held {
			if wr, _ := f.st.WorkRequests().Get(ctx, id, nil); wr.Status != model.StatusPending || wr.Retries != 1 {
				t.Fatalf("request %d is %s after %d retries, want pending after 1", id, wr.Status, wr.Retries)
			}
		}
	})
}

// TestSessionRefusesABadCapacity: a hello whose system:concurrent is out
// of range is refused, naming the field.
func TestSessionRefusesABadCapacity(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newClockedFarm(t, dsn)
		for _, n := range []int{-1, model.MaxConcurrent + 1} {
			r := f.dial(t)
			r.send(protocol.TypeHello, protocol.Hello{Metadata: model.WorkerMetadata{Architectures: []string{"amd64"}, Concurrent: n}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _, err := r.conn.Read(ctx)
			cancel()
			if err == nil || !strings.Contains(err.Error(), "system:concurrent") {
				t.Fatalf("concurrent %d: %v, want the connection closed naming system:concurrent", n, err)
			}
		}
	})
}
