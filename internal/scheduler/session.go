package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/runner/protocol"
	"github.com/kiln-build/kiln/internal/store"
)

// helloTimeout bounds how long a new connection may take to say hello.
const helloTimeout = 30 * time.Second

// writeTimeout bounds one message to a runner.
const writeTimeout = 10 * time.Second

// MaxMessage bounds one message from a runner; runners send logs in
// chunks far below it.
const MaxMessage = 1 << 20

// session is the server's side of one runner connection. It keeps, per
// request, what it knows of the runner's: the requests the runner holds
// (handed out in this session, or kept across a reconnection) and how many
// more it asked for. A runner holds up to its capacity (system:concurrent)
// at once; the store refuses claims beyond it, whatever this state says.
type session struct {
	s      *Scheduler
	conn   *websocket.Conn
	worker int64
	name   string
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	meta   model.WorkerMetadata
	// capacity is how many requests the runner may hold at once.
	capacity int
	// slotFreed wakes a claimer that found the runner full when one of
	// its requests ends.
	slotFreed wake

	// claimMu orders the session's claims with what must see their
	// outcome whole: the check for stale assignments (requests assigned
	// to the worker that the session does not know of) and a reconnection
	// that requeues what the runner does not hold. A claim's request joins
	// held before the lock is released.
	claimMu sync.Mutex

	mu       sync.Mutex
	held     map[int64]*holding // the requests the runner holds, as far as we know
	want     int                // tasks the runner asked for and has not been sent
	claiming bool               // a claimer goroutine runs
	warned   bool               // "not enabled" logged once per session
}

// holding is what a session knows of one request its runner holds.
type holding struct {
	// attempt is the request's retries when this attempt started: its
	// live log's, and the one a cancel signal names.
	attempt int
	// logged says the attempt may have live-log chunks to drop when it
	// ends.
	logged bool
}

// ServeRunner speaks the runner protocol (package protocol) with one
// runner, authenticated as worker w, until the connection drops, the runner
// stays silent for three heartbeat intervals, ctx ends or the scheduler is
// closed. The worker is marked connected after hello and disconnected when
// the session ends; its running requests stay assigned until the heartbeat
// timeout, so that a runner that reconnects quickly keeps all it still
// runs and can report them.
func (s *Scheduler) ServeRunner(ctx context.Context, conn *websocket.Conn, w *model.Worker) {
	conn.SetReadLimit(MaxMessage)
	ctx, cancel := context.WithCancel(ctx)
	ss := &session{s: s, conn: conn, worker: w.ID, name: w.Name, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		log: s.log.With("worker", w.Name), held: map[int64]*holding{}}
	defer close(ss.done)
	defer cancel()

	hello, err := ss.readHello()
	if err != nil {
		ss.log.Info("runner connection refused", "error", err)
		conn.Close(websocket.StatusPolicyViolation, truncate(err.Error()))
		return
	}
	if err := s.register(ss); err != nil {
		ss.log.Info("runner connection refused", "error", err)
		conn.Close(websocket.StatusTryAgainLater, truncate(err.Error()))
		return
	}
	defer s.unregister(ss)

	worker, requeued, err := s.st.ConnectWorker(ctx, w.ID, hello.Metadata, hello.Running...)
	if err != nil {
		ss.log.Warn("marking the runner connected", "error", err)
		conn.Close(websocket.StatusInternalError, "the server could not record the connection; retry later")
		return
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := s.st.DisconnectWorker(dctx, w.ID); err != nil {
			ss.log.Warn("marking the runner disconnected", "error", err)
		}
		ss.log.Info("runner disconnected")
	}()
	ss.meta, ss.capacity = hello.Metadata, hello.Metadata.Capacity()
	if len(requeued) > 0 {
		ss.log.Info("requeued requests the runner no longer runs", "work_requests", requeued)
	}
	// every request the runner still runs and still holds stays its own;
	// its log may have chunks stored through another replica
	keep, attempts := ss.kept(hello.Running)
	for i, id := range keep {
		ss.held[id] = &holding{attempt: attempts[i], logged: true}
	}
	if err := ss.send(protocol.TypeWelcome, protocol.Welcome{WorkerID: worker.ID, Name: worker.Name, Enabled: worker.Enabled,
		HeartbeatMillis: s.HeartbeatInterval().Milliseconds(), Keep: keep,
		Features: []string{protocol.FeatureReadyWithResult, protocol.FeatureConcurrent}}); err != nil {
		return
	}
	ss.log.Info("runner connected", "architectures", hello.Metadata.Architectures, "backends", hello.Metadata.Backends,
		"concurrent", ss.capacity, "enabled", worker.Enabled, "resumed", keep)
	s.metrics.runners.Inc()
	defer s.metrics.runners.Dec()

	go func() {
		select {
		case <-s.stop:
			conn.Close(websocket.StatusGoingAway, "the server is shutting down")
			cancel()
		case <-ctx.Done():
		}
	}()
	ss.loop()
}

func truncate(s string) string {
	if len(s) > 120 { // close reasons must fit in a control frame
		return s[:120]
	}
	return s
}

// readHello reads and checks the first message.
func (ss *session) readHello() (*protocol.Hello, error) {
	ctx, cancel := context.WithTimeout(ss.ctx, helloTimeout)
	defer cancel()
	env, err := ss.read(ctx)
	if err != nil {
		return nil, err
	}
	if env.Type != protocol.TypeHello {
		return nil, fmt.Errorf("expected hello, got %q", env.Type)
	}
	var h protocol.Hello
	if err := env.Decode(&h); err != nil {
		return nil, err
	}
	if len(h.Metadata.Architectures) == 0 {
		return nil, errors.New("hello: the runner reported no architectures")
	}
	if n := h.Metadata.Concurrent; n != 0 {
		if err := model.CheckConcurrent("hello: system:concurrent", n); err != nil {
			return nil, err
		}
	}
	return &h, nil
}

func (ss *session) read(ctx context.Context) (*protocol.Envelope, error) {
	typ, data, err := ss.conn.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageText {
		return nil, errors.New("binary messages are not part of the protocol")
	}
	return protocol.Parse(data)
}

func (ss *session) send(typ string, body any) error {
	b, err := protocol.Encode(typ, body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ss.ctx, writeTimeout)
	defer cancel()
	if err := ss.conn.Write(ctx, websocket.MessageText, b); err != nil {
		ss.cancel()
		return err
	}
	return nil
}

// kept returns which of the requests a reconnecting runner says it still
// runs are still assigned to it, with the attempt of each.
func (ss *session) kept(running []int64) (keep []int64, attempts []int) {
	keep = []int64{}
	for _, id := range running {
		wr, err := ss.s.st.WorkRequests().Get(ss.ctx, id, nil)
		if err == nil && wr.Status == model.StatusRunning && wr.WorkerID != nil && *wr.WorkerID == ss.worker {
			keep = append(keep, id)
			attempts = append(attempts, wr.Retries)
		}
	}
	return keep, attempts
}

// loop reads messages until the connection ends. A runner silent for three
// heartbeat intervals is cut off: its connection is dead or hung.
func (ss *session) loop() {
	silence := 3*ss.s.HeartbeatInterval() + time.Second
	for {
		ctx, cancel := context.WithTimeout(ss.ctx, silence)
		env, err := ss.read(ctx)
		timedOut := ctx.Err() != nil && ss.ctx.Err() == nil
		cancel()
		if err != nil {
			if timedOut {
				ss.log.Warn("runner went silent; closing its connection", "silence", silence.String())
			} else if ss.ctx.Err() == nil && websocket.CloseStatus(err) == -1 {
				ss.log.Info("runner connection lost", "error", err)
			}
			return
		}
		if err := ss.handle(env); err != nil {
			ss.log.Warn("protocol error; closing the connection", "error", err)
			ss.conn.Close(websocket.StatusPolicyViolation, truncate(err.Error()))
			return
		}
	}
}

func (ss *session) handle(env *protocol.Envelope) error {
	switch env.Type {
	case protocol.TypeHeartbeat:
		var hb protocol.Heartbeat
		if len(env.Body) > 0 {
			if err := env.Decode(&hb); err != nil {
				return err
			}
		}
		ss.heartbeat(hb)
	case protocol.TypeReady:
		var r *protocol.Ready
		if len(env.Body) > 0 {
			r = &protocol.Ready{}
			if err := env.Decode(r); err != nil {
				return err
			}
			if r.Slots < 1 {
				return fmt.Errorf("ready: slots is %d: ask for at least one task", r.Slots)
			}
		}
		ss.ready(r)
	case protocol.TypeLog:
		var l protocol.Log
		if err := env.Decode(&l); err != nil {
			return err
		}
		ss.appendLog(l)
	case protocol.TypeResult:
		var r protocol.Result
		if err := env.Decode(&r); err != nil {
			return err
		}
		ss.result(r)
	case protocol.TypeRelease:
		var r protocol.Release
		if err := env.Decode(&r); err != nil {
			return err
		}
		ss.release(r)
	default:
		return fmt.Errorf("unknown message type %q", env.Type)
	}
	return nil
}

// heartbeat records that the runner lives, answers it, and tells the
// runner to stop the requests it runs but no longer holds (aborted, or
// requeued while the runner was out of touch), all read in the one
// statement that records the heartbeat.
func (ss *session) heartbeat(hb protocol.Heartbeat) {
	ctx := ss.ctx
	tasks := hb.IDs()
	connected, running, err := ss.s.st.TouchWorker(ctx, ss.worker)
	switch {
	case err != nil:
		ss.log.Warn("heartbeat", "error", err)
	case !connected:
		// marked lost while we still talk to it (the database was slow,
		// or another replica judged it): connect it again, keeping all
		// it runs and all it holds a result of
		ss.claimMu.Lock()
		ss.mu.Lock()
		keep := slices.Clone(tasks)
		for id := range ss.held {
			keep = append(keep, id)
		}
		ss.mu.Unlock()
		_, requeued, err := ss.s.st.ConnectWorker(ctx, ss.worker, ss.meta, keep...)
		if err != nil {
			ss.log.Warn("heartbeat", "error", err)
		}
		ss.forget(requeued...)
		ss.claimMu.Unlock()
	}
	if serr := ss.send(protocol.TypeHeartbeat, nil); serr != nil || err != nil {
		return
	}
	for _, id := range tasks {
		if !slices.Contains(running, id) {
			ss.stop(id, fmt.Sprintf("work request %d is no longer assigned to this runner (aborted, or requeued after its heartbeats stopped)", id))
		}
	}
}

// stop tells the runner to stop request id, which it no longer holds.
func (ss *session) stop(id int64, reason string) {
	ss.forget(id)
	ss.send(protocol.TypeCancel, protocol.Cancel{WorkRequest: id, Reason: reason})
}

// forget drops requests the runner no longer holds (their result is
// recorded, they were handed back, or the runner was told to stop them),
// which frees their slots, and their live logs.
func (ss *session) forget(ids ...int64) {
	if len(ids) == 0 {
		return
	}
	var ended []endedAttempt
	ss.mu.Lock()
	for _, id := range ids {
		ended = ss.letGo(id, ended)
	}
	ss.mu.Unlock()
	ss.slotFreed.poke()
	ss.dropLogs(ended)
}

// ready records that the runner wants r.Slots more tasks and makes sure a
// claimer runs. A ready without a body (r nil: a runner that runs one task
// at a time, or of the first protocol) says the runner holds nothing and
// wants one task: what the session thought it held was lost on the
// runner's side, and the claimer requeues it when it finds the worker
// full.
func (ss *session) ready(r *protocol.Ready) {
	ss.mu.Lock()
	n := 1
	var ended []endedAttempt
	if r == nil {
		for id := range ss.held {
			ended = ss.letGo(id, ended)
		}
		ss.want = 0
	} else {
		n = r.Slots
	}
	// the store holds the worker to its capacity; this only keeps a
	// runner that asks too much from keeping the claimer busy
	ss.want = min(ss.want+n, ss.capacity)
	start := ss.startClaimer()
	ss.mu.Unlock()
	ss.dropLogs(ended)
	if start {
		go ss.claim()
	}
}

// startClaimer reports whether the caller must start a claimer, and
// records that one runs; ss.mu must be held.
func (ss *session) startClaimer() bool {
	if ss.want <= 0 || ss.claiming {
		return false
	}
	ss.claiming = true
	return true
}

// claim claims requests for the runner until it has as many as it asked
// for, waiting while none matches or while the runner is full, and sends
// them.
func (ss *session) claim() {
	for {
		ss.mu.Lock()
		if ss.want <= 0 || ss.ctx.Err() != nil {
			ss.claiming = false
			ss.mu.Unlock()
			return
		}
		ss.mu.Unlock()
		poked := ss.s.runnersWake.waiting()
		freed := ss.slotFreed.waiting()
		wr, err := ss.claimOne()
		if err == nil {
			ss.handOut(wr)
			continue
		}
		wait := poked
		var fe *store.FieldError
		switch {
		case errors.Is(err, store.ErrNoWork):
		case errors.Is(err, store.ErrWorkerBusy):
			// The runner asked for more than the worker has room for:
			// requests assigned to it that it does not hold were lost
			// (a task message that never arrived, a claim of a session
			// on another replica that had not noticed the runner left);
			// requeue them and look again. Otherwise wait for a slot.
			if ss.requeueStale() > 0 {
				continue
			}
			wait = freed
		case errors.As(err, &fe):
			ss.mu.Lock()
			if !ss.warned {
				ss.log.Info("runner waits", "reason", fe.Message)
				ss.warned = true
			}
			ss.mu.Unlock()
		case ss.ctx.Err() == nil:
			ss.log.Warn("claiming work", "error", err)
		}
		t := time.NewTimer(ss.s.cfg.ClaimInterval)
		select {
		case <-ss.ctx.Done():
		case <-wait:
		case <-t.C:
		}
		t.Stop()
	}
}

// claimOne claims one request for the runner, which then holds it.
func (ss *session) claimOne() (*model.WorkRequest, error) {
	ss.claimMu.Lock()
	defer ss.claimMu.Unlock()
	wr, err := ss.s.st.ClaimWorkRequest(ss.ctx, ss.worker)
	if err != nil {
		return nil, err
	}
	ss.mu.Lock()
	ss.held[wr.ID] = &holding{attempt: wr.Retries}
	ss.want = max(ss.want-1, 0)
	ss.mu.Unlock()
	return wr, nil
}

// appendLog stores a chunk of the log of a request the runner holds, for
// every replica to read (package livelog). A chunk of another request —
// one the runner lost, as far as this session knows — is ignored: nobody
// would read it. A chunk that cannot be stored is lost from the live log
// only; the runner uploads the complete log at the end.
func (ss *session) appendLog(l protocol.Log) {
	ss.mu.Lock()
	h := ss.held[l.WorkRequest]
	var attempt int
	if h != nil {
		h.logged, attempt = true, h.attempt
	}
	ss.mu.Unlock()
	if h == nil {
		return
	}
	if err := ss.s.logs.Append(ss.ctx, l.WorkRequest, attempt, l.Offset, []byte(l.Data)); err != nil && ss.ctx.Err() == nil {
		ss.log.Warn("storing a live-log chunk", "work_request", l.WorkRequest, "error", err)
	}
}

// endedAttempt is an attempt whose live log a session drops: its result
// is recorded, or its runner no longer holds it.
type endedAttempt struct {
	id      int64
	attempt int
}

// letGo removes request id from held and returns the attempt whose live
// log must be dropped, if any; ss.mu must be held.
func (ss *session) letGo(id int64, ended []endedAttempt) []endedAttempt {
	if h := ss.held[id]; h != nil && h.logged {
		ended = append(ended, endedAttempt{id, h.attempt})
	}
	delete(ss.held, id)
	return ended
}

// dropLogs drops the live logs of attempts that ended, in the background:
// the ack and the next task need not wait for it (the sweep of package
// livelog deletes what a failed drop leaves).
func (ss *session) dropLogs(ended []endedAttempt) {
	if len(ended) == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ss.ctx), 10*time.Second)
		defer cancel()
		for _, e := range ended {
			if err := ss.s.logs.Drop(ctx, e.id, e.attempt); err != nil {
				ss.log.Info("dropping a live log; the sweep will", "work_request", e.id, "error", err)
			}
		}
	}()
}

// handOut sends a request claimed for this runner, which the session
// already counts as held: a quick task's result may arrive before the
// sender returns.
func (ss *session) handOut(wr *model.WorkRequest) {
	ss.s.metrics.assigned(wr, model.WorkerExternal)
	ss.log.Info("work request assigned", "work_request", wr.ID, "task", wr.TaskName)
	// A failed send leaves the request assigned: the runner's next hello
	// will not list it, and connecting requeues it.
	ss.send(protocol.TypeTask, protocol.Task{WorkRequest: *wr})
}

// requeueStale gives back to the queue the requests assigned to this
// worker that the runner does not hold, and returns how many.
func (ss *session) requeueStale() int {
	ss.claimMu.Lock()
	defer ss.claimMu.Unlock()
	q := store.Query{Limit: ss.capacity + 10, Filter: map[string]string{"worker": fmt.Sprint(ss.worker), "status": string(model.StatusRunning)}}
	assigned, err := ss.s.st.WorkRequests().List(ss.ctx, q)
	if err != nil {
		return 0
	}
	n := 0
	for _, wr := range assigned {
		ss.mu.Lock()
		held := ss.held[wr.ID] != nil
		ss.mu.Unlock()
		if held {
			continue
		}
		if _, err := ss.s.st.RequeueWorkRequest(ss.ctx, wr.ID, ss.worker, "the runner asked for work without holding this request"); err == nil {
			ss.log.Warn("requeued a request the runner did not know about", "work_request", wr.ID)
			n++
		}
	}
	return n
}

// result records a request's end and acknowledges it. A result that says
// the runner wants another task is recorded together with the next claim
// (store.CompleteAndClaim), whose task follows the ack, unless a claimer
// already runs: then the claimer takes the ask.
func (ss *session) result(r protocol.Result) {
	c := store.Completion{Result: r.Result, Statistics: r.Statistics, Output: r.Output}
	ss.claimMu.Lock()
	ss.mu.Lock()
	claimNext := r.Ready && !ss.claiming
	ss.mu.Unlock()
	var wr, next *model.WorkRequest
	var err error
	if claimNext {
		wr, next, err = ss.s.st.CompleteAndClaim(ss.ctx, r.WorkRequest, ss.worker, c)
	} else {
		wr, err = ss.s.st.CompleteWorkRequest(ss.ctx, r.WorkRequest, ss.worker, c)
	}
	ack := protocol.Ack{WorkRequest: r.WorkRequest}
	var fe *store.FieldError
	switch {
	case err == nil:
		ss.s.metrics.finished.WithLabelValues(string(wr.TaskType), string(wr.Result)).Inc()
		ss.log.Info("work request finished", "work_request", wr.ID, "result", wr.Result)
	case errors.As(err, &fe), errors.Is(err, store.ErrNotFound):
		// not running on this runner any more, or a result the store
		// refuses: retrying cannot help
		ack.Error, ack.Gone = err.Error(), true
		ss.log.Info("result refused: the request is no longer this runner's", "work_request", r.WorkRequest, "reason", err)
	default:
		ack.Error = "the server could not record the result; send it again"
		ss.log.Warn("recording a result", "work_request", r.WorkRequest, "error", err)
	}
	// not recorded: the runner sends the result (and its ask) again
	recorded := err == nil || ack.Gone
	var ended []endedAttempt
	ss.mu.Lock()
	if recorded {
		ended = ss.letGo(r.WorkRequest, ended)
		if r.Ready && next == nil {
			ss.want = min(ss.want+1, ss.capacity)
		}
	}
	if next != nil {
		ss.held[next.ID] = &holding{attempt: next.Retries}
	}
	start := ss.startClaimer()
	ss.mu.Unlock()
	ss.claimMu.Unlock()
	ss.dropLogs(ended)
	if ss.send(protocol.TypeAck, ack) != nil {
		return
	}
	if recorded {
		ss.slotFreed.poke() // after the ack: the runner frees the slot first
	}
	if next != nil {
		ss.handOut(next)
	}
	if start {
		go ss.claim()
	}
}

// release hands a request back to the queue.
func (ss *session) release(r protocol.Release) {
	ack := protocol.Ack{WorkRequest: r.WorkRequest}
	reason := "the runner gave it back"
	if r.Reason != "" {
		reason += ": " + r.Reason
	}
	_, err := ss.s.st.RequeueWorkRequest(ss.ctx, r.WorkRequest, ss.worker, reason)
	var fe *store.FieldError
	switch {
	case err == nil:
		ss.log.Info("work request handed back", "work_request", r.WorkRequest, "reason", r.Reason)
	case errors.As(err, &fe), errors.Is(err, store.ErrNotFound):
		ack.Error, ack.Gone = err.Error(), true
	default:
		ack.Error = "the server could not requeue the request; send it again"
	}
	ss.send(protocol.TypeAck, ack)
	if err == nil || ack.Gone {
		ss.forget(r.WorkRequest)
	}
}

// register makes ss the session of its worker in this process.
func (s *Scheduler) register(ss *session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("the server is shutting down")
	}
	if _, ok := s.sessions[ss.worker]; ok {
		return fmt.Errorf("worker %q is already connected to this server; one runner per token", ss.name)
	}
	s.sessions[ss.worker] = ss
	return nil
}

func (s *Scheduler) unregister(ss *session) {
	s.mu.Lock()
	if s.sessions[ss.worker] == ss {
		delete(s.sessions, ss.worker)
	}
	s.mu.Unlock()
}
