// Package scheduler moves work in a kiln server: it hands pending work
// requests to the runners connected to this server, keeps the queue honest
// when runners vanish, completes Wait requests on time and runs Server
// tasks on the server's own in-process worker.
//
// It keeps no queue of its own. Every decision about who gets what is one
// store transaction (store.ClaimWorkRequest: priority, then age, row locks
// with FOR UPDATE SKIP LOCKED on PostgreSQL), so several server replicas on
// one database never hand out the same request, and a server that restarts
// loses nothing: the database is the queue. What the scheduler holds in
// memory is only what belongs to this process — the WebSocket sessions of
// the runners connected to it — and all of it may vanish with the process
// without harm. The logs runners stream go to the database (package
// livelog), so that any replica can serve them.
//
// Why runners talk WebSocket rather than long-poll: a runner's connection
// state is part of the domain (workers are "connected" while their
// connection lives, docs/architecture.md#how-work-runs), and a persistent connection gives that state
// exactly — the server learns of a dead runner from the closed socket, not
// from the absence of the next poll — while also carrying heartbeats, the
// streamed log and the result on one authenticated channel, with the
// server able to say "stop" (an aborted request) at once. Long-polling
// would need the same heartbeats plus a separate log upload path, and would
// turn "connected" into a guess based on poll gaps. The cost of WebSocket —
// proxies must allow the upgrade, and the HTTP server does not track
// hijacked connections — is paid here: the scheduler closes its sessions
// itself on shutdown (Close), and runners reconnect with backoff.
//
// How work moves:
//   - A connected, enabled runner that says it is ready gets the next
//     request it can run (ClaimWorkRequest), and as many more as it asks
//     for up to its capacity (the runner's concurrent setting, reported as
//     system:concurrent; the store refuses claims beyond it, so no state
//     of a session can make a runner hold more); while none matches it
//     waits until a request that runners run becomes pending in any
//     process of the database or ClaimInterval passes, whichever comes
//     first. The store's OnPending hook (a submission, a retry, a requeue,
//     a completion that unblocks dependents) publishes the request's task
//     type as a signal (package signal) to every server process, this one
//     included, so that a request submitted on one replica starts at once
//     on a runner connected to another; ClaimInterval is the safety net
//     for signals lost while a process's signal connection was down. The
//     server worker and the Wait loop wait the same way for their own
//     task types only: a completion that makes nothing pending, the
//     common case, wakes no one.
//   - A request taken from its runner — aborted (the store's OnFinish
//     hook), or requeued because the runner went silent — is announced
//     the same way, naming the request, its worker and its attempt, and
//     the process the runner is connected to tells it to stop that one
//     request (the others it runs go on); the runner's next heartbeat
//     would tell it too, later.
//   - A runner that stops sending heartbeats for HeartbeatTimeout loses its
//     requests: RequeueLostWork puts them back to pending (or fails them
//     after max_retries), and whoever completes one is the only one allowed
//     to. Every replica applies the rule; the store makes each requeue
//     happen once.
//   - Wait requests become running when they turn pending, due after
//     their delay (due_at), and complete when it has passed; the loop
//     reads both through indexes and sleeps until the next one is due.
//     Every replica runs the loop: starting and completing are
//     transactions that check the request's state, so one replica wins
//     and the others change nothing.
//   - Server requests run one at a time on this server's worker of type
//     server, registered at start.
package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/livelog"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/signal"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/tasks"
)

// Defaults of Config.
const (
	DefaultHeartbeatTimeout = 30 * time.Second
	DefaultClaimInterval    = time.Second
)

// Config tunes a Scheduler. The zero value is usable.
type Config struct {
	// HeartbeatTimeout is how long a runner may stay silent before its
	// request is requeued. Runners are told to send heartbeats three
	// times per timeout. Default DefaultHeartbeatTimeout.
	HeartbeatTimeout time.Duration
	// ClaimInterval is how often the session of a runner that waits for
	// work looks at the queue when nothing pokes it. Default
	// DefaultClaimInterval.
	ClaimInterval time.Duration
	// ServerWorkerName names this process's in-process worker of type
	// server. It must differ between replicas sharing a database (the
	// server derives it from the host name and the listening port) and
	// stay the same across restarts, so that a restarted server requeues
	// what its previous life was running. Default "server-<hostname>".
	ServerWorkerName string
	// Signals carries wake-ups and cancellations between the server
	// processes of the database; the scheduler subscribes to it in New,
	// and its owner runs it. nil means this process only, right for
	// SQLite (one server per database file) and for tests.
	Signals *signal.Bus
	// LiveLogs stores the logs runners stream, for every replica to read;
	// nil means a relay over the store and Signals.
	LiveLogs *livelog.Relay
	// Registerer receives the scheduler's metrics; nil means none.
	Registerer prometheus.Registerer
	// Logger receives the scheduler's logs; nil discards them.
	Logger *slog.Logger
}

// Scheduler runs the work of one server process. Build it with New, start
// Run, serve runners with ServeRunner, and Close it before the store.
type Scheduler struct {
	st      store.Store
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	bus     *signal.Bus
	logs    *livelog.Relay

	// Who waits for what: the runners' sessions (Worker and Signing
	// tasks), the server worker (Server tasks), the Wait loop.
	runnersWake, serverWake, waitWake wake

	// serverRunning is the Server task the server worker runs, 0 when
	// idle.
	serverRunning atomic.Int64

	mu       sync.Mutex
	sessions map[int64]*session
	closed   bool
	stop     chan struct{} // closed by Close: ends every session
}

// New returns a scheduler over st and subscribes it to the store's hooks
// and to cfg.Signals. It fails only when its metrics cannot be
// registered.
func New(st store.Store, cfg Config) (*Scheduler, error) {
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if cfg.ClaimInterval <= 0 {
		cfg.ClaimInterval = DefaultClaimInterval
	}
	if cfg.ServerWorkerName == "" {
		host, _ := os.Hostname()
		cfg.ServerWorkerName = WorkerName("server", host)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	if cfg.Signals == nil {
		if cfg.Signals, err = signal.NewLocal(signal.Options{Logger: cfg.Logger}); err != nil {
			return nil, err
		}
	}
	if cfg.LiveLogs == nil {
		if cfg.LiveLogs, err = livelog.New(st, cfg.Signals, livelog.Options{Logger: cfg.Logger}); err != nil {
			return nil, err
		}
	}
	s := &Scheduler{st: st, cfg: cfg, log: cfg.Logger, metrics: m, bus: cfg.Signals, logs: cfg.LiveLogs,
		sessions: map[int64]*session{}, stop: make(chan struct{})}
	s.subscribe()
	return s, nil
}

var nameJunk = regexp.MustCompile(`[^A-Za-z0-9._+-]+`)

// WorkerName joins parts into a valid worker name, replacing characters
// names may not hold, so that host names and addresses can go into one.
func WorkerName(parts ...string) string {
	var out string
	for _, p := range parts {
		p = nameJunk.ReplaceAllString(p, "-")
		if p == "" {
			continue
		}
		if out != "" {
			out += "-"
		}
		out += p
	}
	if len(out) > 100 {
		out = out[:100]
	}
	return out
}

// HeartbeatInterval is how often runners must send heartbeats.
func (s *Scheduler) HeartbeatInterval() time.Duration {
	return max(s.cfg.HeartbeatTimeout/3, 50*time.Millisecond)
}

// Poke tells everyone waiting for work, in every server process of the
// database, to look at the queue now: for changes the store does not
// report as a request becoming pending (a worker enabled, say). It never
// blocks.
func (s *Scheduler) Poke() { s.bus.Publish(topicPoke, "") }

// wake is a broadcast signal: everyone waiting on the channel of waiting
// returns at the next poke. The zero value is ready to use.
type wake struct {
	mu sync.Mutex
	ch chan struct{} // closed and replaced by poke
}

func (w *wake) poke() {
	w.mu.Lock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
	w.mu.Unlock()
}

// waiting returns the channel that the next poke closes. Take it before
// looking at the queue, so that a poke in between is not missed.
func (w *wake) waiting() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

// Run is the scheduler's loop: it requeues work of runners that stopped
// sending heartbeats, keeps Wait requests' timers and runs the in-process
// server worker, until ctx ends. It returns nil then, or an error when the
// server worker cannot be registered.
func (s *Scheduler) Run(ctx context.Context) error {
	w, err := s.registerServerWorker(ctx)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.serverWorker(ctx, w) }()
	go func() { defer wg.Done(); s.waitLoop(ctx) }()
	s.requeueLoop(ctx, w)
	wg.Wait()
	return nil
}

// Close ends every runner session of this process (runners reconnect, to
// this server when it comes back or to another replica) and refuses new
// ones. Call it when the server shuts down: the HTTP server's Shutdown
// does not wait for hijacked connections such as WebSockets.
func (s *Scheduler) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		<-ss.done
	}
}

// requeueLoop runs requeueLost a few times per heartbeat timeout, and
// keeps the process's server worker alive by the same rule: a replica
// that dies loses its Server tasks to the others once its server worker
// falls silent, as a runner does.
func (s *Scheduler) requeueLoop(ctx context.Context, server *model.Worker) {
	every := max(s.cfg.HeartbeatTimeout/4, 20*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.serverHeartbeat(ctx, server)
		s.requeueLost(ctx)
	}
}

// serverHeartbeat records that the server worker lives. Marked lost
// meanwhile (this process stalled past the timeout, and another replica
// judged it), it connects again, keeping the Server task it runs unless
// that went to someone else.
func (s *Scheduler) serverHeartbeat(ctx context.Context, w *model.Worker) {
	connected, _, err := s.st.TouchWorker(ctx, w.ID)
	if err != nil || connected {
		if err != nil && ctx.Err() == nil {
			s.log.Warn("server worker heartbeat", "error", err)
		}
		return
	}
	var keep []int64
	if id := s.serverRunning.Load(); id != 0 {
		keep = append(keep, id)
	}
	if _, requeued, err := s.st.ConnectWorker(ctx, w.ID, w.Metadata, keep...); err != nil {
		s.log.Warn("server worker heartbeat", "error", err)
	} else {
		s.log.Warn("the server worker had been judged lost; connected again", "worker", w.Name, "requeued", requeued)
	}
}

// requeueLost applies the heartbeat rule once: the requests of runners
// silent for longer than HeartbeatTimeout go back to the queue (or fail
// after max_retries) and are counted; those back in the queue wake
// whoever can run them (the store's OnPending hook), and the runners that
// lost them are told to stop, wherever they are connected. It returns
// the requests it took away.
func (s *Scheduler) requeueLost(ctx context.Context) []int64 {
	revoked, err := s.st.RequeueLostWork(ctx, s.cfg.HeartbeatTimeout)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("requeueing lost work", "error", err)
		}
		return nil
	}
	var ids []int64
	for _, r := range revoked {
		ids = append(ids, r.WorkRequest)
		// a runner judged lost may still be connected somewhere, its
		// heartbeats lost on the way to the database: it must stop
		s.publishCancel(r, "the runner stopped sending heartbeats; the request went back to the queue")
	}
	if len(ids) > 0 {
		s.log.Info("requeued the work of runners that stopped sending heartbeats", "work_requests", ids,
			"heartbeat_timeout", s.cfg.HeartbeatTimeout.String())
		s.metrics.requeued.Add(float64(len(ids)))
	}
	return ids
}

// errSkip aborts a store update whose precondition no longer holds.
var errSkip = errors.New("skip")

// waitLoop starts pending Wait requests and completes running ones whose
// delay has passed, sleeping until the next one is due.
func (s *Scheduler) waitLoop(ctx context.Context) {
	const idle = time.Second
	for {
		poked := s.waitWake.waiting()
		next, err := s.waitPass(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("Wait requests", "error", err)
		}
		sleep := idle
		if !next.IsZero() {
			sleep = min(idle, max(time.Until(next), time.Millisecond))
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-poked:
		case <-t.C:
		}
		t.Stop()
	}
}

// waitBatch bounds the Wait requests one query of waitPass reads.
const waitBatch = 100

// waitPass does one round of Wait bookkeeping and returns when the next
// running Wait request is due (zero when none runs). Its reads go through
// indexes (store.PendingWork, store.DueWaits): a pass costs a few index
// lookups plus the Wait requests it moves, whatever else the queue holds.
func (s *Scheduler) waitPass(ctx context.Context) (time.Time, error) {
	for {
		pending, err := s.st.PendingWork(ctx, model.TaskWait, waitBatch)
		if err != nil {
			return time.Time{}, err
		}
		for i := range pending {
			if err := s.startWait(ctx, &pending[i]); err != nil {
				return time.Time{}, err
			}
		}
		if len(pending) < waitBatch {
			break
		}
	}
	for {
		now := time.Now()
		due, next, err := s.st.DueWaits(ctx, now, waitBatch)
		if err != nil {
			return time.Time{}, err
		}
		for i := range due {
			wr := &due[i]
			d, perr := tasks.ParseDelay(wr.Data)
			if wr.DueAt == nil && perr == nil {
				// started by a kiln from before due_at
				at := wr.CreatedAt
				if wr.StartedAt != nil {
					at = *wr.StartedAt
				}
				if at = at.Add(time.Duration(d.Delay)); at.After(now) {
					if err := s.setDue(ctx, wr.ID, at); err != nil {
						return time.Time{}, err
					}
					if next.IsZero() || at.Before(next) {
						next = at
					}
					continue
				}
			}
			if err := s.completeWait(ctx, wr.ID, perr); err != nil {
				return time.Time{}, err
			}
		}
		if len(due) < waitBatch {
			return next, nil
		}
	}
}

// startWait moves a pending Wait request to running, due after its delay;
// a request whose delay is unusable ends with an error.
func (s *Scheduler) startWait(ctx context.Context, wr *model.WorkRequest) error {
	d, perr := tasks.ParseDelay(wr.Data)
	if perr != nil {
		return s.completeWait(ctx, wr.ID, perr)
	}
	_, err := s.st.WorkRequests().Update(ctx, wr.ID, nil, func(cur *model.WorkRequest) error {
		if cur.Status != model.StatusPending {
			return errSkip
		}
		now := time.Now().UTC()
		due := now.Add(time.Duration(d.Delay))
		cur.Status, cur.StartedAt, cur.DueAt = model.StatusRunning, &now, &due
		return nil
	})
	if err != nil && !errors.Is(err, errSkip) && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// setDue gives a running Wait request started by an older kiln its due
// time.
func (s *Scheduler) setDue(ctx context.Context, id int64, due time.Time) error {
	_, err := s.st.WorkRequests().Update(ctx, id, nil, func(cur *model.WorkRequest) error {
		if cur.Status != model.StatusRunning || cur.DueAt != nil {
			return errSkip
		}
		cur.DueAt = &due
		return nil
	})
	if err != nil && !errors.Is(err, errSkip) && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// completeWait ends a Wait request: success when its delay has passed,
// an error when its delay could not be read (perr).
func (s *Scheduler) completeWait(ctx context.Context, id int64, perr error) error {
	c := store.Completion{Result: model.ResultSuccess}
	if perr != nil {
		c = store.Completion{Result: model.ResultError, Output: jsonError(perr.Error())}
	}
	if _, err := s.st.CompleteWorkRequest(ctx, id, 0, c); err != nil {
		var fe *store.FieldError
		if errors.As(err, &fe) || errors.Is(err, store.ErrNotFound) {
			return nil // completed or aborted meanwhile, maybe by another replica
		}
		return err
	}
	s.metrics.finished.WithLabelValues(string(model.TaskWait), string(c.Result)).Inc()
	return nil
}

func jsonError(msg string) []byte {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return b
}
