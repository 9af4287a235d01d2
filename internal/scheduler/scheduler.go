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
// the runners connected to it, and the live logs they stream — and all of
// it may vanish with the process without harm.
//
// Why runners talk WebSocket rather than long-poll: a runner's connection
// state is part of the domain (workers are "connected" while their
// connection lives, SPEC §2b), and a persistent connection gives that state
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
//     request it can run (ClaimWorkRequest); while none matches it waits
//     for a local poke (a submission, a completion that unblocks
//     dependents) or ClaimInterval, whichever comes first, so a request
//     submitted on another replica is picked up within ClaimInterval.
//   - A runner that stops sending heartbeats for HeartbeatTimeout loses its
//     request: RequeueLostWork puts it back to pending (or fails it after
//     max_retries), and whoever completes it is the only one allowed to.
//   - Wait requests become running when they turn pending and complete
//     when their delay has passed.
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
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/model"
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
	// ClaimInterval is how often an idle runner's session looks at the
	// queue when nothing pokes it. Default DefaultClaimInterval.
	ClaimInterval time.Duration
	// ServerWorkerName names this process's in-process worker of type
	// server. It must differ between replicas sharing a database (the
	// server derives it from the host name and the listening port) and
	// stay the same across restarts, so that a restarted server requeues
	// what its previous life was running. Default "server-<hostname>".
	ServerWorkerName string
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
	logs    *liveLogs

	mu       sync.Mutex
	poke     chan struct{} // closed and replaced on Poke
	sessions map[int64]*session
	closed   bool
	stop     chan struct{} // closed by Close: ends every session
}

// New returns a scheduler over st. It fails only when its metrics cannot be
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
	return &Scheduler{st: st, cfg: cfg, log: cfg.Logger, metrics: m, logs: newLiveLogs(),
		poke: make(chan struct{}), sessions: map[int64]*session{}, stop: make(chan struct{})}, nil
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

// Poke tells everyone waiting for work in this process that there may be
// some: after a submission, a retry, a requeue or a completion (which may
// unblock dependents). It never blocks.
func (s *Scheduler) Poke() {
	s.mu.Lock()
	close(s.poke)
	s.poke = make(chan struct{})
	s.mu.Unlock()
}

// poked returns the channel that the next Poke closes.
func (s *Scheduler) poked() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.poke
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
	s.requeueLoop(ctx)
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

// requeueLoop runs requeueLost a few times per heartbeat timeout.
func (s *Scheduler) requeueLoop(ctx context.Context) {
	every := max(s.cfg.HeartbeatTimeout/4, 20*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.requeueLost(ctx)
	}
}

// requeueLost applies the heartbeat rule once: the requests of runners
// silent for longer than HeartbeatTimeout go back to the queue (or fail
// after max_retries), are counted, and wake whoever waits for work. It
// returns the requests it took away.
func (s *Scheduler) requeueLost(ctx context.Context) []int64 {
	ids, err := s.st.RequeueLostWork(ctx, s.cfg.HeartbeatTimeout)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("requeueing lost work", "error", err)
		}
		return nil
	}
	if len(ids) > 0 {
		s.log.Info("requeued the work of runners that stopped sending heartbeats", "work_requests", ids,
			"heartbeat_timeout", s.cfg.HeartbeatTimeout.String())
		s.metrics.requeued.Add(float64(len(ids)))
		s.Poke()
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
		case <-s.poked():
		case <-t.C:
		}
		t.Stop()
	}
}

// waitPass does one round of Wait bookkeeping and returns when the next
// running Wait request is due (zero when none runs).
func (s *Scheduler) waitPass(ctx context.Context) (time.Time, error) {
	err := s.eachRequest(ctx, map[string]string{"task_type": string(model.TaskWait), "status": string(model.StatusPending)},
		func(wr *model.WorkRequest) error {
			_, err := s.st.WorkRequests().Update(ctx, wr.ID, nil, func(cur *model.WorkRequest) error {
				if cur.Status != model.StatusPending {
					return errSkip
				}
				now := time.Now().UTC()
				cur.Status, cur.StartedAt = model.StatusRunning, &now
				return nil
			})
			if err != nil && !errors.Is(err, errSkip) && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			return nil
		})
	if err != nil {
		return time.Time{}, err
	}
	var next time.Time
	err = s.eachRequest(ctx, map[string]string{"task_type": string(model.TaskWait), "status": string(model.StatusRunning)},
		func(wr *model.WorkRequest) error {
			d, perr := tasks.ParseDelay(wr.Data)
			started := wr.CreatedAt
			if wr.StartedAt != nil {
				started = *wr.StartedAt
			}
			due := started.Add(time.Duration(d.Delay))
			if perr == nil && time.Now().Before(due) {
				if next.IsZero() || due.Before(next) {
					next = due
				}
				return nil
			}
			c := store.Completion{Result: model.ResultSuccess}
			if perr != nil {
				c = store.Completion{Result: model.ResultError, Output: jsonError(perr.Error())}
			}
			if _, err := s.st.CompleteWorkRequest(ctx, wr.ID, 0, c); err != nil {
				var fe *store.FieldError
				if errors.As(err, &fe) {
					return nil // completed or aborted meanwhile, maybe by another replica
				}
				return err
			}
			s.metrics.finished.WithLabelValues(string(model.TaskWait), string(c.Result)).Inc()
			s.Poke()
			return nil
		})
	return next, err
}

// eachRequest calls fn for every work request matching filter, page by
// page.
func (s *Scheduler) eachRequest(ctx context.Context, filter map[string]string, fn func(*model.WorkRequest) error) error {
	q := store.Query{Limit: store.MaxPageSize, Filter: filter}
	for {
		page, err := s.st.WorkRequests().List(ctx, q)
		if err != nil {
			return err
		}
		for i := range page {
			if err := fn(&page[i]); err != nil {
				return err
			}
		}
		if len(page) < q.Limit {
			return nil
		}
		q.After = page[len(page)-1].ID
	}
}

func jsonError(msg string) []byte {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return b
}
