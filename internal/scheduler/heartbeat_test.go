package scheduler

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/runner/protocol"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// timeout is the heartbeat timeout of these tests: long, so that only the
// fake clock, never the machine's speed, decides who is lost.
const timeout = 30 * time.Second

// fakeClock is the store's clock in the test's hand; sessions read it
// from their own goroutines.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// clockedFarm is a store on a fake clock with a public workspace, one
// pending amd64 request and an enabled external worker, and a scheduler
// over it that is not running its loops: the test applies the heartbeat
// rule itself, with requeueLost.
type clockedFarm struct {
	st     *store.SQL
	s      *Scheduler
	clock  *fakeClock
	wr     *model.WorkRequest
	worker *model.Worker
	secret string
}

func newClockedFarm(t *testing.T, dsn string) *clockedFarm {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	must(t, err)
	t.Cleanup(func() { st.Close() })
	clock := &fakeClock{now: time.Now().UTC().Truncate(time.Microsecond)}
	st.SetClock(clock.Now)
	sc := &model.Scope{Name: "debian"}
	must(t, st.Scopes().Create(ctx, sc))
	ws := &model.Workspace{Name: "main", ScopeID: sc.ID, Public: true}
	must(t, st.Workspaces().Create(ctx, ws))
	wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: ws.ID, MaxRetries: 3,
		Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
	must(t, st.SubmitWorkRequest(ctx, wr))
	w := &model.Worker{Name: "runner", WorkerType: model.WorkerExternal, Enabled: true}
	must(t, st.Workers().Create(ctx, w))
	tok, err := st.CreateToken(ctx, model.Token{WorkerID: &w.ID, Enabled: true})
	must(t, err)
	s, err := New(st, Config{HeartbeatTimeout: timeout, ServerWorkerName: "server-test"})
	must(t, err)
	t.Cleanup(s.Close)
	return &clockedFarm{st: st, s: s, clock: clock, wr: wr, worker: w, secret: tok.Secret}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// requeueLost runs the scheduler's heartbeat rule and checks what it took.
func (f *clockedFarm) requeueLost(t *testing.T, want ...int64) {
	t.Helper()
	if got := f.s.requeueLost(context.Background()); !slices.Equal(got, want) {
		t.Fatalf("requeueLost took %v, want %v", got, want)
	}
}

// holds fails unless the farm's request runs on its worker, connected.
func (f *clockedFarm) holds(t *testing.T) {
	t.Helper()
	f.assigned(t)
	w, err := f.st.Workers().Get(context.Background(), f.worker.ID, nil)
	must(t, err)
	if w.ConnectedAt == nil {
		t.Fatal("the runner holding the request is marked disconnected")
	}
}

// assigned fails unless the farm's request runs on its worker.
func (f *clockedFarm) assigned(t *testing.T) {
	t.Helper()
	wr, err := f.st.WorkRequests().Get(context.Background(), f.wr.ID, nil)
	must(t, err)
	if wr.Status != model.StatusRunning || wr.WorkerID == nil || *wr.WorkerID != f.worker.ID {
		t.Fatalf("request %d is %s on worker %v, want running on the runner", wr.ID, wr.Status, wr.WorkerID)
	}
}

// TestRequeueLostFollowsTheTimeout: the scheduler judges runners by its
// own HeartbeatTimeout — not a microsecond early — counts what it
// requeues in kiln_scheduler_requeued_total and wakes the sessions
// waiting for work.
func TestRequeueLostFollowsTheTimeout(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newClockedFarm(t, dsn)
		_, _, err := f.st.ConnectWorker(ctx, f.worker.ID, model.WorkerMetadata{Architectures: []string{"amd64"}})
		must(t, err)
		if got, err := f.st.ClaimWorkRequest(ctx, f.worker.ID); err != nil || got.ID != f.wr.ID {
			t.Fatalf("claim: %v %v", got, err)
		}
		f.clock.Advance(timeout)
		f.requeueLost(t)
		f.holds(t)
		if n := testutil.ToFloat64(f.s.metrics.requeued); n != 0 {
			t.Fatalf("requeued_total is %v with nothing requeued", n)
		}
		woken := f.s.runnersWake.waiting()
		f.clock.Advance(time.Microsecond)
		f.requeueLost(t, f.wr.ID)
		if n := testutil.ToFloat64(f.s.metrics.requeued); n != 1 {
			t.Fatalf("requeued_total is %v, want 1", n)
		}
		select {
		case <-woken:
		default:
			t.Fatal("requeueing did not wake the sessions waiting for work")
		}
	})
}

// runnerConn is the runner's side of a session, spoken by hand.
type runnerConn struct {
	t    *testing.T
	conn *websocket.Conn
}

func (f *clockedFarm) dial(t *testing.T) *runnerConn {
	t.Helper()
	srv := httptest.NewServer(api.New(f.st, nil, api.Options{Dispatcher: f.s}).Handler())
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, srv.URL+protocol.Path, &websocket.DialOptions{
		Subprotocols: []string{protocol.Subprotocol},
		HTTPHeader:   http.Header{"Authorization": {"Token " + f.secret}},
	})
	must(t, err)
	t.Cleanup(func() { conn.CloseNow() })
	return &runnerConn{t: t, conn: conn}
}

func (r *runnerConn) send(typ string, body any) {
	r.t.Helper()
	b, err := protocol.Encode(typ, body)
	must(r.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	must(r.t, r.conn.Write(ctx, websocket.MessageText, b))
}

// expect reads the next message, which must be of type typ, into body.
func (r *runnerConn) expect(typ string, body any) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := r.conn.Read(ctx)
	if err != nil {
		r.t.Fatalf("waiting for a %s message: %v", typ, err)
	}
	var env protocol.Envelope
	must(r.t, json.Unmarshal(b, &env))
	if env.Type != typ {
		r.t.Fatalf("got %s %s, want %s", env.Type, env.Body, typ)
	}
	if body != nil {
		must(r.t, env.Decode(body))
	}
}

// heartbeat sends a heartbeat about the request the runner runs and waits
// until the server is done with it: the server records a heartbeat before
// echoing it, and checks the request after, so an empty heartbeat's echo
// follows — after the cancel the first one may have caused, which would
// fail expect.
func (r *runnerConn) heartbeat(running int64) {
	r.t.Helper()
	r.send(protocol.TypeHeartbeat, protocol.Heartbeat{Running: running})
	r.expect(protocol.TypeHeartbeat, nil)
	r.send(protocol.TypeHeartbeat, protocol.Heartbeat{})
	r.expect(protocol.TypeHeartbeat, nil)
}

// TestSessionHeartbeats drives one runner session by hand through the
// rules of the session's heartbeats: the runner is told to send three
// per timeout; each keeps its work (however long it has held it); one
// that arrives after the worker was marked disconnected (as another
// replica's session ending does) connects it again and keeps its request;
// once silent past the timeout it loses the request, and its next
// heartbeat about that request is answered with cancel.
func TestSessionHeartbeats(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newClockedFarm(t, dsn)
		r := f.dial(t)
		r.send(protocol.TypeHello, protocol.Hello{Metadata: model.WorkerMetadata{Architectures: []string{"amd64"}}})
		var welcome protocol.Welcome
		r.expect(protocol.TypeWelcome, &welcome)
		if want := (timeout / 3).Milliseconds(); welcome.HeartbeatMillis != want {
			t.Fatalf("runners are told to send heartbeats every %d ms, want %d (three per timeout)", welcome.HeartbeatMillis, want)
		}
		r.send(protocol.TypeReady, nil)
		var task protocol.Task
		r.expect(protocol.TypeTask, &task)
		if task.WorkRequest.ID != f.wr.ID {
			t.Fatalf("the runner got request %d, want %d", task.WorkRequest.ID, f.wr.ID)
		}

		// heartbeats keep the work, well past one timeout since the claim
		for range 4 {
			f.clock.Advance(timeout / 2)
			r.heartbeat(f.wr.ID)
			f.requeueLost(t)
		}
		f.holds(t)

		// marked disconnected while still talking: the next heartbeat
		// connects it again, and it keeps what it runs
		must(t, f.st.DisconnectWorker(ctx, f.worker.ID))
		r.heartbeat(f.wr.ID)
		f.holds(t)

		// silent past the timeout: the request goes back to the queue, and
		// the runner is told to stop it at once (were its connection still
		// alive on some replica), and again when it next speaks
		f.clock.Advance(timeout + time.Microsecond)
		f.requeueLost(t, f.wr.ID)
		var cancel protocol.Cancel
		r.expect(protocol.TypeCancel, &cancel)
		if cancel.WorkRequest != f.wr.ID || !strings.Contains(cancel.Reason, "heartbeats") {
			t.Fatalf("cancel %+v, want one of %d for its heartbeats", cancel, f.wr.ID)
		}
		r.send(protocol.TypeHeartbeat, protocol.Heartbeat{Running: f.wr.ID})
		r.expect(protocol.TypeHeartbeat, nil)
		r.expect(protocol.TypeCancel, &cancel)
		if cancel.WorkRequest != f.wr.ID {
			t.Fatalf("cancel of %d, want %d", cancel.WorkRequest, f.wr.ID)
		}
		if wr, _ := f.st.WorkRequests().Get(ctx, f.wr.ID, nil); wr.Status != model.StatusPending || wr.WorkerID != nil {
			t.Fatalf("the lost request is %s on %v, want pending on no worker", wr.Status, wr.WorkerID)
		}
	})
}
