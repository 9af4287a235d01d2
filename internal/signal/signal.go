// Package signal carries the small messages by which the kiln server
// processes sharing one database tell each other that something changed:
// a work request became pending (idle runners anywhere should look at the
// queue now), a running request was taken from its runner (the process
// the runner is connected to must tell it to stop), a running request's
// live log grew (followers on any process may read more).
//
// One Bus per process, whatever its users: on PostgreSQL it holds one
// connection that LISTENs on one channel, and fans what arrives out to the
// subscribers of each topic — the scheduler, the live-log readers — rather
// than each of them holding a listening connection of its own. On SQLite,
// where one server process owns the database file, the same Bus delivers
// within the process only.
//
// Conventions every user of the package keeps:
//
//   - Signals are hints, never state. The database is the truth, and every
//     receiver can do its job without them, only later: idle runners still
//     look at the queue every ClaimInterval, a runner's heartbeat still
//     learns that its request was taken away, a log follower still reads
//     the log when it polls. A signal saves the wait; losing one costs
//     only that wait. So publishing never blocks and never fails the
//     caller: what cannot be sent is dropped and counted.
//   - Delivery is at most once per process, in publishing order per
//     publisher. A signal published by this process reaches this
//     process's subscribers at once, synchronously, and the others through
//     PostgreSQL's NOTIFY, sent after the caller's transaction committed
//     (the store's hooks run after commit), so a receiver that reads the
//     database on a signal sees what the signal announces.
//   - While the listening connection is down, signals of other processes
//     are lost. When it comes back the Bus cannot know what it missed, so
//     it tells every OnResync subscriber to assume that everything may
//     have changed (the scheduler wakes all its runners' sessions once).
//     Reconnection backs off exponentially (100 ms to 5 s), and the
//     connection is pinged when idle, so that a half-open TCP connection
//     is noticed within seconds rather than at the next TCP keepalive.
//   - Handlers run on the delivering goroutine — the publisher's for this
//     process's signals, the listener's for the others' — and must not
//     block: poke a channel, start a goroutine.
//   - Payloads are short text (UTF-8, no NUL byte: NOTIFY's rules), at
//     most MaxPayload bytes; topics are lower-case words. Both are
//     constants of kiln's code, never user input, so that the metrics'
//     topic label stays bounded.
//
// Why NOTIFY rather than a table that processes poll: a poll interval is
// exactly the latency this package exists to remove, and polling a table
// from every replica costs the database reads around the clock. NOTIFY
// costs one statement per batch of signals sent and nothing while idle.
// Its queue (8 GB by default, shared by all listeners of the database)
// only grows while some listener stops reading; at kiln's payloads of
// about 50 bytes it would take on the order of 10^8 unread signals to fill
// it. kiln_signals_queue_usage shows how full it is.
package signal

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// Topic names a kind of signal. Subscribers register per topic.
type Topic string

// Channel is the PostgreSQL NOTIFY channel every kiln process of a
// database listens on. Channels are per database, so farms on different
// databases of one PostgreSQL server never hear each other.
const Channel = "kiln_signals"

// ApplicationName names the listening connection in pg_stat_activity
// (unless the database URL names its connections itself).
const ApplicationName = "kiln signals"

// MaxPayload bounds a payload: NOTIFY refuses more than 8000 bytes, and
// the envelope (sender and topic) takes some of them.
const MaxPayload = 7900

// maxQueue bounds the signals waiting to be sent to PostgreSQL; beyond it
// new ones are dropped (and counted): the database is too slow or down,
// and the receivers' polls will do.
const maxQueue = 4096

// Timing of the listening connection.
const (
	// pingIdle is how long the listener waits for a notification before
	// it checks that its connection still answers.
	pingIdle = 15 * time.Second
	// pingTimeout bounds that check, and the connection's setup.
	pingTimeout = 5 * time.Second
	// stableAfter is how long a connection must have lived for its
	// failure to start the backoff afresh.
	stableAfter = 10 * time.Second
)

var topicName = regexp.MustCompile(`^[a-z][a-z_]{0,30}$`)

// Options tunes a Bus. The zero value is usable.
type Options struct {
	// Logger receives connection changes and dropped signals; nil
	// discards.
	Logger *slog.Logger
	// Registerer receives the bus's metrics; nil means none.
	Registerer prometheus.Registerer
	// NewBackOff paces reconnection; nil means exponential from 100 ms to
	// 5 s with jitter. Tests shorten it.
	NewBackOff func() backoff.BackOff
}

// Bus delivers signals to the subscribers of this process and, on
// PostgreSQL, of every other kiln process of the database. Build one per
// process with NewLocal or NewPostgres, register subscribers, then Run it.
// Its methods are safe for concurrent use.
type Bus struct {
	id      string // this process, so that it ignores its own NOTIFYs
	log     *slog.Logger
	metrics *metrics

	mu       sync.RWMutex
	handlers map[Topic][]func(string)
	resync   []func()

	pg *pgTransport // nil: this process only

	heard     chan struct{} // closed once the bus hears the others
	heardOnce sync.Once
}

// NewLocal returns a Bus that delivers within this process only: for
// SQLite, whose database one server process owns.
func NewLocal(opts Options) (*Bus, error) {
	return newBus(nil, opts)
}

// NewPostgres returns a Bus for the PostgreSQL database at dsn: it will
// listen on its own connection to dsn, and send through db, the process's
// connection pool. Nothing connects before Run.
func NewPostgres(dsn string, db *sql.DB, opts Options) (*Bus, error) {
	if _, err := pgx.ParseConfig(dsn); err != nil {
		return nil, fmt.Errorf("signals: %w", err)
	}
	nb := opts.NewBackOff
	if nb == nil {
		nb = func() backoff.BackOff {
			return &backoff.ExponentialBackOff{InitialInterval: 100 * time.Millisecond, RandomizationFactor: 0.3,
				Multiplier: 2, MaxInterval: 5 * time.Second}
		}
	}
	p := &pgTransport{dsn: dsn, db: db, newBackOff: nb, kick: make(chan struct{}, 1)}
	p.setState(errors.New("the signal connection is not open yet"))
	return newBus(p, opts)
}

func newBus(p *pgTransport, opts Options) (*Bus, error) {
	id := make([]byte, 6)
	rand.Read(id)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bus{id: hex.EncodeToString(id), log: log, handlers: map[Topic][]func(string){}, pg: p, heard: make(chan struct{})}
	if p == nil {
		close(b.heard)
	}
	m, err := newMetrics(opts.Registerer, b)
	if err != nil {
		return nil, err
	}
	b.metrics = m
	return b, nil
}

// Subscribe registers h for the signals of topic t, from this process and
// the others. h must not block.
func (b *Bus) Subscribe(t Topic, h func(payload string)) {
	mustTopic(t)
	b.mu.Lock()
	b.handlers[t] = append(b.handlers[t], h)
	b.mu.Unlock()
	b.metrics.topic(t)
}

// OnResync registers f, called whenever signals may have been missed: each
// time the listening connection is (re)established, Run's first included.
// f must not block.
func (b *Bus) OnResync(f func()) {
	b.mu.Lock()
	b.resync = append(b.resync, f)
	b.mu.Unlock()
}

// Publish delivers payload to the subscribers of t in this process now,
// and queues it for the other processes. It never blocks; a payload over
// MaxPayload, or one that does not fit the queue, is dropped for the
// others (and counted), never for this process.
func (b *Bus) Publish(t Topic, payload string) {
	mustTopic(t)
	b.metrics.published.WithLabelValues(string(t)).Inc()
	b.deliver(t, payload)
	if b.pg == nil {
		return
	}
	if len(payload) > MaxPayload || strings.IndexByte(payload, 0) >= 0 {
		b.metrics.dropped.WithLabelValues(dropInvalid).Inc()
		b.log.Warn("signal not sent to the other processes: payload too long or holding a NUL byte", "topic", t, "bytes", len(payload))
		return
	}
	if !b.pg.enqueue(b.id + " " + string(t) + " " + payload) {
		b.metrics.dropped.WithLabelValues(dropQueueFull).Inc()
	}
}

// Err is nil while the bus hears the other processes, and says why not
// otherwise (the listening connection is down, or not open yet). A bus
// of this process only always hears everything.
func (b *Bus) Err() error {
	if b.pg == nil {
		return nil
	}
	return b.pg.state()
}

// Listening is closed once the bus first hears the other processes (at
// once for a bus of this process only), so that a starting server can
// wait for it before it says it is ready.
func (b *Bus) Listening() <-chan struct{} { return b.heard }

// Run listens and sends until ctx ends, reconnecting whenever the
// connection drops. It returns nil then. A bus of this process only just
// waits for ctx, after telling its OnResync subscribers once.
func (b *Bus) Run(ctx context.Context) error {
	if b.pg == nil {
		b.resynced()
		<-ctx.Done()
		return nil
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); b.send(ctx) }()
	b.listen(ctx)
	wg.Wait()
	return nil
}

func mustTopic(t Topic) {
	if !topicName.MatchString(string(t)) {
		panic(fmt.Sprintf("signal: invalid topic %q", t))
	}
}

// deliver hands a payload to the subscribers of t in this process.
func (b *Bus) deliver(t Topic, payload string) {
	b.mu.RLock()
	hs := b.handlers[t]
	b.mu.RUnlock()
	for _, h := range hs {
		h(payload)
	}
}

func (b *Bus) resynced() {
	b.mu.RLock()
	fs := b.resync
	b.mu.RUnlock()
	for _, f := range fs {
		f()
	}
}

// received handles a NOTIFY payload: "<sender> <topic> <payload>".
func (b *Bus) received(envelope string) {
	from, rest, ok1 := strings.Cut(envelope, " ")
	t, payload, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || from == b.id {
		return
	}
	b.mu.RLock()
	_, known := b.handlers[Topic(t)]
	b.mu.RUnlock()
	if !known {
		return // a topic this process does not know (a newer replica's)
	}
	b.metrics.received.WithLabelValues(t).Inc()
	b.deliver(Topic(t), payload)
}

// pgTransport is the PostgreSQL side of a Bus.
type pgTransport struct {
	dsn        string
	db         *sql.DB
	newBackOff func() backoff.BackOff

	mu    sync.Mutex
	queue []string
	kick  chan struct{}

	err atomic.Pointer[error] // nil while listening
}

func (p *pgTransport) setState(err error) {
	if err == nil {
		p.err.Store(nil)
		return
	}
	p.err.Store(&err)
}

func (p *pgTransport) state() error {
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (p *pgTransport) enqueue(env string) bool {
	p.mu.Lock()
	if len(p.queue) >= maxQueue {
		p.mu.Unlock()
		return false
	}
	p.queue = append(p.queue, env)
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return true
}

// send sends what is queued, as soon as it is queued: one statement per
// batch, so that a burst (a workflow's steps becoming pending together)
// costs one round trip, and identical signals of a batch go once.
func (b *Bus) send(ctx context.Context) {
	p := b.pg
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		}
		p.mu.Lock()
		batch := p.queue
		p.queue = nil
		p.mu.Unlock()
		batch = dedupe(batch)
		if len(batch) == 0 {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, pingTimeout)
		_, err := p.db.ExecContext(sctx, "SELECT pg_notify($1, s) FROM unnest($2::text[]) AS s", Channel, batch)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			b.metrics.dropped.WithLabelValues(dropSendFailed).Add(float64(len(batch)))
			b.log.Warn("signals not sent to the other processes; they will notice at their next poll", "count", len(batch), "error", err)
		}
	}
}

func dedupe(batch []string) []string {
	if len(batch) < 2 {
		return batch
	}
	seen := make(map[string]bool, len(batch))
	out := batch[:0]
	for _, s := range batch {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// listen keeps a listening connection until ctx ends.
func (b *Bus) listen(ctx context.Context) {
	p := b.pg
	bo := p.newBackOff()
	first := true
	for ctx.Err() == nil {
		started := time.Now()
		err := b.listenOnce(ctx, first)
		if ctx.Err() != nil {
			break
		}
		first = false
		p.setState(fmt.Errorf("the signal connection to PostgreSQL is down: %w", err))
		b.metrics.listening.Set(0)
		if time.Since(started) >= stableAfter {
			bo.Reset()
		}
		wait := bo.NextBackOff()
		b.log.Warn("signal connection lost; reconnecting", "error", err, "retry_in", wait.Round(time.Millisecond).String())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	p.setState(errors.New("the signal connection is closed: the server is stopping"))
	b.metrics.listening.Set(0)
}

// listenOnce opens the connection, LISTENs, tells the OnResync
// subscribers, and delivers notifications until the connection fails.
func (b *Bus) listenOnce(ctx context.Context, first bool) error {
	p := b.pg
	cfg, err := pgx.ParseConfig(p.dsn)
	if err != nil {
		return err
	}
	if _, set := cfg.RuntimeParams["application_name"]; !set {
		cfg.RuntimeParams["application_name"] = ApplicationName
	}
	cctx, cancel := context.WithTimeout(ctx, pingTimeout)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	cctx, cancel = context.WithTimeout(ctx, pingTimeout)
	_, err = conn.Exec(cctx, "LISTEN "+Channel)
	cancel()
	if err != nil {
		return err
	}
	p.setState(nil)
	b.heardOnce.Do(func() { close(b.heard) })
	b.metrics.listening.Set(1)
	b.metrics.connections.Inc()
	if !first {
		b.log.Info("signal connection back; waking everyone once in case signals were missed")
	}
	b.resynced()
	for {
		wctx, cancel := context.WithTimeout(ctx, pingIdle)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			if n.Channel == Channel {
				b.received(n.Payload)
			}
		case pgconn.Timeout(err):
			// idle: make sure the connection still answers
			pctx, cancel := context.WithTimeout(ctx, pingTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				return err
			}
		default:
			return err
		}
	}
}
