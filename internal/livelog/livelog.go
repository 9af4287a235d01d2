// Package livelog relays the logs of running work requests between the
// server replicas of a database: a runner streams its task's log to the
// replica it is connected to, and anyone may follow it through any
// replica — the API's logs route, `kiln work logs --follow`, the
// dashboard — while the task runs. When the task ends, its complete log
// is an artifact like any other and the relay forgets it.
//
// The relay is a table, live_log_chunks (store/livelog.go): the replica a
// runner streams to appends each chunk it receives, readers read from any
// replica, and a signal (package signal, topic "log") tells waiting
// readers on every replica that a log grew, so that following costs no
// polling. The alternative was to relay the chunks themselves through
// PostgreSQL's NOTIFY. Measured on PostgreSQL 15 (BenchmarkRelay, both
// ways interleaved in one run; docs/benchmarks.md#live-logs has the
// table), appending a chunk to the table — what the runner's session
// waits for — costs about what notifying the chunk costs: 0.8-0.9× for
// the 64 KiB chunks a busy log streams (a NOTIFY payload holds at most
// 8000 bytes of text, so binary log bytes go base64-encoded in nine
// payloads), 1.0-1.1× for small ones. The signal comes on top, sent by
// the bus's goroutine and batched per burst; signalled one by one, the
// table does up to twice the database work for small chunks. So cost did
// not decide. What did:
//
//   - A reader who comes late needs the log so far. With NOTIFY every
//     replica would have to keep every running log in memory, from the
//     moment it started, in case someone asks for it there — memory times
//     replicas — and a replica that started after the task would have
//     none of its beginning. The table has it for every replica.
//   - A listener that falls behind holds up everyone. PostgreSQL keeps
//     notifications in one queue per server (8 GB) until every listener
//     has read them; a replica that stalls (a long GC pause, a stopped
//     process, a slow network) lets the queue grow with every log byte
//     of the farm, about 1.5 bytes of queue per log byte as measured, and
//     once it is full every NOTIFY fails — the wake-up signals of package
//     signal included. Through the table, a stalled reader delays only
//     itself, and the queue carries only ~30-byte signals.
//   - The table survives a replica's death: the runners of a killed
//     replica reconnect elsewhere and their logs go on where they were;
//     with NOTIFY, what the dead replica alone had buffered is gone.
//   - Only the table costs space: at most store.MaxLiveLog (8 MiB) per
//     running request, deleted when the request ends (by the replica that
//     records its result; a sweep catches what a killed replica left).
//
// Chunks belong to one attempt of a request, so that a runner that lost
// its request, or a requeued attempt's old log, never shows in the next
// attempt's log. Gaps (chunks a runner sent to a replica that died before
// storing them) and overlaps (a runner resending after it reconnected)
// are resolved on reading: data is contiguous from the offset a read
// returns.
package livelog

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/signal"
)

// Topic is the signal that a live log grew: "<work request id> <end>".
const Topic signal.Topic = "log"

// DefaultSweepInterval is how often Run deletes the chunks nobody will
// read; most are deleted when their request ends.
const DefaultSweepInterval = time.Minute

// Store is what the relay needs of the database (package store).
type Store interface {
	AppendLiveLog(ctx context.Context, id int64, attempt int, offset int64, data []byte) error
	ReadLiveLog(ctx context.Context, id, offset int64, limit int) (data []byte, from int64, running bool, err error)
	DropLiveLog(ctx context.Context, id int64, attempt int) error
	SweepLiveLogs(ctx context.Context) (int64, error)
}

// Options tunes a Relay. The zero value is usable.
type Options struct {
	// Logger receives sweep failures; nil discards.
	Logger *slog.Logger
	// Registerer receives the relay's metrics; nil means none.
	Registerer prometheus.Registerer
	// SweepInterval is how often Run sweeps; 0 means
	// DefaultSweepInterval.
	SweepInterval time.Duration
}

// Relay appends the chunks runners stream to this process, and reads and
// waits for the logs of running requests wherever their runners are
// connected. One per process; its methods are safe for concurrent use.
type Relay struct {
	st  Store
	bus *signal.Bus
	log *slog.Logger
	cfg Options

	mu      sync.Mutex
	waiters map[int64]*waiters

	appended prometheus.Counter
	swept    prometheus.Counter
}

// waiters are the readers of one log waiting for it to grow.
type waiters struct {
	n  int           // how many
	ch chan struct{} // closed when the log grows
}

// New returns the relay of this process over st, signalling through bus.
// It subscribes to bus, so build it before bus runs.
func New(st Store, bus *signal.Bus, opts Options) (*Relay, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = DefaultSweepInterval
	}
	r := &Relay{st: st, bus: bus, log: opts.Logger, cfg: opts, waiters: map[int64]*waiters{},
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_live_log_received_bytes_total",
			Help: "Bytes of live logs that runners connected to this server process streamed, stored for every replica to read.",
		}),
		swept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_live_log_swept_chunks_total",
			Help: "Live-log chunks this server process deleted because nobody would read them any more (requests ended or requeued without the replica that stored them recording it).",
		}),
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{r.appended, r.swept} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	bus.Subscribe(Topic, r.grew)
	bus.OnResync(r.wakeAll)
	return r, nil
}

// Append stores a chunk that the runner of attempt of request id
// streamed, at offset in its log, and tells the readers waiting on any
// replica.
func (r *Relay) Append(ctx context.Context, id int64, attempt int, offset int64, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if err := r.st.AppendLiveLog(ctx, id, attempt, offset, data); err != nil {
		return err
	}
	r.appended.Add(float64(len(data)))
	r.bus.Publish(Topic, strconv.FormatInt(id, 10)+" "+strconv.FormatInt(offset+int64(len(data)), 10))
	return nil
}

// Drop forgets the log of attempt of request id, once its result is
// recorded: the complete log is an artifact now.
func (r *Relay) Drop(ctx context.Context, id int64, attempt int) error {
	return r.st.DropLiveLog(ctx, id, attempt)
}

// Read returns the log of request id from offset on, as far as it has
// reached: data is contiguous from from, which is offset unless the bytes
// there are gone (see package store's ReadLiveLog). running is false when
// the request does not run (any more): its log, if any, is an artifact.
func (r *Relay) Read(ctx context.Context, id, offset int64) (data []byte, from int64, running bool, err error) {
	return r.st.ReadLiveLog(ctx, id, offset, 0)
}

// Wait returns when the log of request id holds something past offset,
// when the request is not running, or when ctx ends (with its error).
// It returns at once in the first two cases; otherwise it waits for the
// signal that the log grew, on whatever replica. A caller follows a log
// by calling Read and Wait in turn.
func (r *Relay) Wait(ctx context.Context, id, offset int64) error {
	grown := r.waiting(id)
	defer r.done(id)
	data, _, running, err := r.st.ReadLiveLog(ctx, id, offset, 1)
	if err != nil || len(data) > 0 || !running {
		return err
	}
	select {
	case <-grown:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waiting registers a reader of id and returns the channel that the
// next growth closes. Take it before reading, so that a growth in
// between is not missed.
func (r *Relay) waiting(id int64) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.waiters[id]
	if w == nil {
		w = &waiters{ch: make(chan struct{})}
		r.waiters[id] = w
	}
	w.n++
	return w.ch
}

func (r *Relay) done(id int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.waiters[id]; w != nil {
		if w.n--; w.n == 0 {
			delete(r.waiters, id)
		}
	}
}

// grew handles the signal that a log grew: its readers wake.
func (r *Relay) grew(payload string) {
	s, _, _ := strings.Cut(payload, " ")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return
	}
	r.mu.Lock()
	if w := r.waiters[id]; w != nil {
		close(w.ch)
		w.ch = make(chan struct{})
	}
	r.mu.Unlock()
}

// wakeAll wakes every waiting reader: signals may have been missed.
func (r *Relay) wakeAll() {
	r.mu.Lock()
	for _, w := range r.waiters {
		close(w.ch)
		w.ch = make(chan struct{})
	}
	r.mu.Unlock()
}

// Run sweeps the chunks nobody will read every SweepInterval until ctx
// ends. Every replica sweeps: a sweep deletes only what no running
// attempt owns, so replicas sweeping together do no harm.
func (r *Relay) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := r.st.SweepLiveLogs(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Warn("sweeping live logs", "error", err)
		case n > 0:
			r.swept.Add(float64(n))
		}
	}
}
