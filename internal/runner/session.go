package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/kiln-build/kiln/internal/runner/protocol"
)

// logChunk bounds one log message; the server's limit is far above it.
const logChunk = 64 << 10

// logFlushInterval is how often new log output is sent while a task runs.
const logFlushInterval = 250 * time.Millisecond

// sessionCounter numbers sessions, so a job knows whether its result was
// sent on the current connection.
var sessionCounter atomic.Int64

// conn is one connection's writer side, and what the runner asked of the
// server on it.
type conn struct {
	ws *websocket.Conn
	id int
	// readyWithResult: the server reads result.ready
	// (protocol.FeatureReadyWithResult).
	readyWithResult bool
	// concurrent: the server reads ready.slots and heartbeat.tasks
	// (protocol.FeatureConcurrent); slots is how many requests the runner
	// holds at once on this connection: Concurrent with such a server,
	// else one.
	concurrent bool
	slots      int
	// asked counts the tasks asked for on this connection and not
	// received yet. The runner asks while its jobs and these fall short
	// of slots; the server sends no task it was not asked for, so a task
	// it receives is one of these (the session loop alone reads and writes
	// it).
	asked int
}

func (c *conn) send(ctx context.Context, typ string, body any) error {
	b, err := protocol.Encode(typ, body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, b)
}

// dial opens the runner's WebSocket. A 401 or 403 is fatal: the token is
// wrong, and retrying will not make it right.
func (r *Runner) dial(ctx context.Context) (*websocket.Conn, error) {
	u := strings.TrimSuffix(r.cfg.Server, "/") + protocol.Path
	ctx, cancel := context.WithTimeout(withEndpoint(ctx, endpointConnect), 30*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:   &http.Client{Transport: r.http.Transport},
		HTTPHeader:   http.Header{"Authorization": {"Token " + r.token}},
		Subprotocols: []string{protocol.Subprotocol},
	})
	if err != nil {
		if resp != nil {
			defer resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusUnauthorized, http.StatusForbidden:
				return nil, errFatal{fmt.Errorf("the server refused the runner's token: %s", problemDetail(resp))}
			}
			return nil, fmt.Errorf("connecting to %s: %s", r.cfg.Server, problemDetail(resp))
		}
		return nil, fmt.Errorf("connecting to %s: %w", r.cfg.Server, err)
	}
	ws.SetReadLimit(16 << 20) // a task message carries the request's data
	return ws, nil
}

// session runs one connection. It returns nil when the runner is done,
// errFatal when it must stop, and another error to reconnect; welcomed
// says whether the server accepted it (resetting the backoff).
func (r *Runner) session(ctx context.Context) (welcomed bool, err error) {
	ws, err := r.dial(r.hard)
	if err != nil {
		return false, err
	}
	defer ws.CloseNow()
	c := &conn{ws: ws, id: int(sessionCounter.Add(1))}
	hctx := r.hard

	r.mu.Lock()
	var running []int64
	for _, j := range r.sortedJobs() {
		running = append(running, j.wr.ID)
	}
	r.mu.Unlock()
	if err := c.send(hctx, protocol.TypeHello, protocol.Hello{Metadata: r.meta, Running: running}); err != nil {
		return false, err
	}
	rctx, rcancel := context.WithTimeout(hctx, 30*time.Second)
	env, err := readEnvelope(rctx, ws)
	rcancel()
	if err != nil {
		if s := websocket.CloseStatus(err); s == websocket.StatusPolicyViolation {
			return false, errFatal{fmt.Errorf("the server refused the runner: %w", err)}
		}
		return false, err
	}
	var welcome protocol.Welcome
	if env.Type != protocol.TypeWelcome || env.Decode(&welcome) != nil {
		return false, fmt.Errorf("the server answered hello with %q", env.Type)
	}
	welcomed = true
	c.readyWithResult = slices.Contains(welcome.Features, protocol.FeatureReadyWithResult)
	c.concurrent = slices.Contains(welcome.Features, protocol.FeatureConcurrent)
	c.slots = 1
	if c.concurrent {
		c.slots = r.cfg.Concurrent
	} else if r.cfg.Concurrent > 1 {
		r.log.Warn("the server gives one task at a time to a runner (it predates concurrent runners); running one at a time", "concurrent", r.cfg.Concurrent)
	}
	r.heard()
	r.setConn(ConnConnected)
	r.log.Info("connected", "worker", welcome.Name, "enabled", welcome.Enabled)
	if !welcome.Enabled {
		r.log.Warn("this worker is disabled: it gets no work until an admin runs 'kiln worker enable " + welcome.Name + "'")
	}
	r.resume(welcome.Keep)
	interval := time.Duration(welcome.HeartbeatMillis) * time.Millisecond
	if interval <= 0 {
		interval = 10 * time.Second
	}

	msgs := make(chan *protocol.Envelope, 16)
	readErr := make(chan error, 1)
	go func() {
		for {
			env, err := readEnvelope(hctx, ws)
			if err != nil {
				readErr <- err
				close(msgs)
				return
			}
			msgs <- env
		}
	}()

	heartbeat := time.NewTicker(interval)
	defer heartbeat.Stop()
	flush := time.NewTicker(logFlushInterval)
	defer flush.Stop()
	lastHeard := time.Now()
	for {
		// bring the server up to date with the runner's state
		done, err := r.reconcile(hctx, c)
		if err != nil {
			return true, err
		}
		if done {
			ws.Close(websocket.StatusNormalClosure, "runner done")
			return true, nil
		}
		select {
		case env, ok := <-msgs:
			if !ok {
				return true, <-readErr
			}
			lastHeard = time.Now()
			r.heard()
			if err := r.handle(hctx, c, env); err != nil {
				r.metrics.errors.WithLabelValues(errProtocol).Inc()
				return true, err
			}
		case <-r.changed:
		case <-flush.C:
			if err := r.flushLog(hctx, c); err != nil {
				return true, err
			}
		case <-heartbeat.C:
			if since := time.Since(lastHeard); since > 3*interval+time.Second {
				return true, errSilent{since}
			}
			var hb protocol.Heartbeat
			r.mu.Lock()
			for _, j := range r.sortedJobs() {
				if !j.finished {
					hb.Tasks = append(hb.Tasks, j.wr.ID)
				}
			}
			r.mu.Unlock()
			if !c.concurrent && len(hb.Tasks) > 0 {
				hb.Running, hb.Tasks = hb.Tasks[0], nil
			}
			if err := c.send(hctx, protocol.TypeHeartbeat, hb); err != nil {
				return true, err
			}
		case <-hctx.Done():
			return true, nil
		}
	}
}

func readEnvelope(ctx context.Context, ws *websocket.Conn) (*protocol.Envelope, error) {
	typ, data, err := ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageText {
		return nil, errors.New("the server sent a binary message")
	}
	env, err := protocol.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("from the server: %w", err)
	}
	return env, nil
}

// resume applies welcome.keep: a held request the server did not keep was
// requeued (maybe already running elsewhere), so it is stopped and
// forgotten; the others go on.
func (r *Runner) resume(keep []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, j := range r.sortedJobs() {
		switch {
		case slices.Contains(keep, j.wr.ID):
		case j.finished:
			r.log.Info("the server no longer holds the finished request for this runner; dropping its result", "work_request", j.wr.ID)
			r.clearJob(j)
		default:
			r.log.Warn("the server gave the request to someone else while this runner was away; stopping it", "work_request", j.wr.ID)
			j.dropped = true
			j.cancel()
		}
	}
}

// clearJob forgets job j, which leaves its last stage; r.mu must be held.
func (r *Runner) clearJob(j *job) {
	r.metrics.stageDone(j.stage, time.Since(j.stageSince))
	delete(r.jobs, j.wr.ID)
}

// errSilent ends a session whose server stopped answering heartbeats.
type errSilent struct{ since time.Duration }

func (e errSilent) Error() string {
	return fmt.Sprintf("the server has been silent for %s", e.since.Round(time.Millisecond))
}

// reconcile sends what the server must learn: finished jobs' results
// (or their hand-backs), and how many more tasks the runner wants. It
// reports done when the runner has nothing left to do.
func (r *Runner) reconcile(ctx context.Context, c *conn) (bool, error) {
	type message struct {
		typ  string
		body any
	}
	var out []message
	r.mu.Lock()
	if len(r.jobs) == 0 && !r.wantsWork() {
		r.mu.Unlock()
		return true, nil
	}
	now := time.Now()
	for _, j := range r.sortedJobs() {
		switch {
		case j.finished && j.dropped:
			r.recordRun(j, false)
			if r.cfg.Once {
				r.onceDone = true
			}
			r.clearJob(j)
			r.wake()
		case j.finished && j.sentIn != c.id && now.After(j.retryAt):
			j.sentIn = c.id
			if j.release {
				out = append(out, message{protocol.TypeRelease, protocol.Release{WorkRequest: j.wr.ID, Reason: "the runner is shutting down"}})
				continue
			}
			// a runner that will want another task asks for it with the
			// result, saving the server a transaction and both a round
			// trip
			res := j.result
			res.Ready = c.readyWithResult && r.wantsWork() && !r.cfg.Once
			j.sentReady = res.Ready
			if res.Ready {
				c.asked++
			}
			out = append(out, message{protocol.TypeResult, res})
		}
	}
	free := 0
	if r.wantsWork() {
		free = c.slots - len(r.jobs) - c.asked
	}
	c.asked += max(free, 0)
	r.mu.Unlock()
	for _, m := range out {
		if err := c.send(ctx, m.typ, m.body); err != nil {
			return false, err
		}
	}
	switch {
	case free <= 0:
	case c.concurrent:
		return false, c.send(ctx, protocol.TypeReady, protocol.Ready{Slots: free})
	default:
		return false, c.send(ctx, protocol.TypeReady, nil)
	}
	return false, nil
}

// handle acts on one message from the server.
func (r *Runner) handle(ctx context.Context, c *conn, env *protocol.Envelope) error {
	switch env.Type {
	case protocol.TypeHeartbeat:
	case protocol.TypeTask:
		var t protocol.Task
		if err := env.Decode(&t); err != nil {
			return err
		}
		c.asked = max(c.asked-1, 0)
		r.mu.Lock()
		_, dup := r.jobs[t.WorkRequest.ID]
		refuse := !r.wantsWork() || r.runningTasks() >= c.slots
		r.mu.Unlock()
		switch {
		case dup:
			// the server requeued and gave back a request this runner
			// runs (it believed it lost): the run under way is the one
			// it holds
			r.log.Warn("the server handed over a request this runner already runs; it goes on", "work_request", t.WorkRequest.ID)
			r.wake()
			return nil
		case refuse:
			r.log.Info("handing back a task received while shutting down or full", "work_request", t.WorkRequest.ID)
			return c.send(ctx, protocol.TypeRelease, protocol.Release{WorkRequest: t.WorkRequest.ID, Reason: "the runner is shutting down"})
		}
		r.start(t.WorkRequest)
	case protocol.TypeAck:
		var a protocol.Ack
		if err := env.Decode(&a); err != nil {
			return err
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		j := r.jobs[a.WorkRequest]
		if j == nil {
			return nil
		}
		if a.Error != "" && !a.Gone {
			r.metrics.errors.WithLabelValues(errResult).Inc()
			r.log.Warn("the server could not record the result; sending it again", "work_request", a.WorkRequest, "error", a.Error)
			if j.sentReady {
				c.asked = max(c.asked-1, 0) // the server claimed nothing for a result it did not record
			}
			j.sentIn, j.retryAt = 0, time.Now().Add(time.Second)
			go func() { time.Sleep(time.Second); r.wake() }()
			return nil
		}
		if a.Gone {
			r.log.Info("the server no longer expects this result", "work_request", a.WorkRequest, "reason", a.Error)
		}
		r.recordRun(j, a.Gone)
		if r.cfg.Once {
			r.onceDone = true
		}
		r.clearJob(j)
		r.wake()
	case protocol.TypeCancel:
		var cn protocol.Cancel
		if err := env.Decode(&cn); err != nil {
			return err
		}
		r.mu.Lock()
		if j := r.jobs[cn.WorkRequest]; j != nil && !j.finished {
			r.log.Info("the server cancelled the task", "work_request", cn.WorkRequest, "reason", cn.Reason)
			j.dropped = true
			j.cancel()
		}
		r.mu.Unlock()
	default:
		return fmt.Errorf("unknown message %q from the server", env.Type)
	}
	return nil
}

// flushLog sends the jobs' logs written since the last flush, each
// under its own request. Progress is recorded only for what was sent, so
// a reconnection resumes where the last connection stopped.
func (r *Runner) flushLog(ctx context.Context, c *conn) error {
	r.mu.Lock()
	jobs := r.sortedJobs()
	r.mu.Unlock()
	for _, j := range jobs {
		if err := r.flushJobLog(ctx, c, j); err != nil {
			return err
		}
	}
	return nil
}

// flushJobLog sends what job j's log holds beyond what was sent.
func (r *Runner) flushJobLog(ctx context.Context, c *conn, j *job) error {
	r.mu.Lock()
	if r.jobs[j.wr.ID] != j || j.logPath == "" {
		r.mu.Unlock()
		return nil
	}
	id, path, off := j.wr.ID, j.logPath, j.logSent
	r.mu.Unlock()
	f, err := os.Open(path)
	if err != nil {
		return nil // not created yet, or already cleaned up
	}
	defer f.Close()
	buf := make([]byte, logChunk)
	for {
		n, err := f.ReadAt(buf, off)
		if n > 0 {
			if serr := c.send(ctx, protocol.TypeLog, protocol.Log{WorkRequest: id, Offset: off, Data: string(buf[:n])}); serr != nil {
				return serr
			}
			off += int64(n)
			r.mu.Lock()
			if r.jobs[id] == j {
				j.logSent = off
			}
			r.mu.Unlock()
		}
		if err == io.EOF || n == 0 {
			return nil
		}
		if err != nil {
			return nil
		}
	}
}
