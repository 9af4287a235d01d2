package signal_test

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kiln-build/kiln/internal/signal"
	"github.com/kiln-build/kiln/internal/testdb"
)

// inbox collects what a subscriber receives.
type inbox struct {
	mu  sync.Mutex
	got []string
	ch  chan struct{}
}

func newInbox() *inbox { return &inbox{ch: make(chan struct{}, 1000)} }

func (in *inbox) add(p string) {
	in.mu.Lock()
	in.got = append(in.got, p)
	in.mu.Unlock()
	in.ch <- struct{}{}
}

func (in *inbox) all() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]string(nil), in.got...)
}

// await waits until the inbox holds n payloads.
func (in *inbox) await(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for len(in.all()) < n {
		select {
		case <-in.ch:
		case <-deadline:
			t.Fatalf("received %q, want %d payloads", in.all(), n)
		}
	}
	return in.all()
}

func TestLocalDeliversAtOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	b, err := signal.NewLocal(signal.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	b.Subscribe("pending", func(p string) { got = append(got, "pending:"+p) })
	b.Subscribe("log", func(p string) { got = append(got, "log:"+p) })
	resyncs := 0
	b.OnResync(func() { resyncs++ })
	b.Publish("pending", "Worker")
	b.Publish("log", "7 1024")
	b.Publish("poke", "") // nobody listens: nothing happens
	if want := []string{"pending:Worker", "log:7 1024"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("delivered %q, want %q: in-process delivery is synchronous", got, want)
	}
	if b.Err() != nil {
		t.Fatalf("a process-only bus always hears everything: %v", b.Err())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	cancel()
	<-done
	if resyncs != 1 {
		t.Fatalf("Run told OnResync %d times, want once", resyncs)
	}
	if v := value(t, reg, "kiln_signals_published_total", "pending"); v != 1 {
		t.Fatalf("published{topic=pending} = %v, want 1", v)
	}
}

func TestTopicsAreChecked(t *testing.T) {
	b, _ := signal.NewLocal(signal.Options{})
	defer func() {
		if recover() == nil {
			t.Fatal("a topic with a space must panic: it would break the envelope")
		}
	}()
	b.Publish("two words", "x")
}

// pgBus starts a bus on dsn, as one server process would, and waits until
// it listens.
func pgBus(t *testing.T, dsn string, reg prometheus.Registerer, subscribe func(b *signal.Bus)) *signal.Bus {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	b, err := signal.NewPostgres(dsn, db, signal.Options{Registerer: reg, NewBackOff: func() backoff.BackOff {
		return backoff.NewConstantBackOff(50 * time.Millisecond)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if b.Err() == nil {
		t.Fatal("a bus that has not connected yet cannot claim to hear the others")
	}
	subscribe(b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; db.Close() })
	awaitListening(t, b)
	return b
}

func awaitListening(t *testing.T, b *signal.Bus) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the bus did not start listening: %v", b.Err())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPostgresReachesOtherProcesses(t *testing.T) {
	dsn := testdb.Postgres(t)
	inA, inB := newInbox(), newInbox()
	a := pgBus(t, dsn, nil, func(b *signal.Bus) { b.Subscribe("pending", inA.add) })
	regB := prometheus.NewRegistry()
	b := pgBus(t, dsn, regB, func(b *signal.Bus) { b.Subscribe("pending", inB.add) })

	for _, p := range []string{"one", "two", "two", "three"} {
		a.Publish("pending", p)
	}
	if got := inA.all(); strings.Join(got, ",") != "one,two,two,three" {
		t.Fatalf("the publisher's own subscribers got %q: each signal once, at once", got)
	}
	// order is kept; a repeated signal may be folded into one, so the
	// other process hears three or four: wait for the last
	got := inB.await(t, 3)
	for deadline := time.Now().Add(10 * time.Second); got[len(got)-1] != "three" && time.Now().Before(deadline); {
		got = inB.await(t, len(got)+1)
	}
	if s := strings.Join(got, ","); s != "one,two,three" && s != "one,two,two,three" {
		t.Fatalf("the other process got %q", got)
	}
	time.Sleep(100 * time.Millisecond)
	if len(inA.all()) != 4 {
		t.Fatalf("the publisher heard its own NOTIFY again: %q", inA.all())
	}

	// the other way, and a payload NOTIFY would refuse
	b.Publish("pending", strings.Repeat("x", signal.MaxPayload+1))
	b.Publish("pending", "four")
	if got := inA.await(t, 5); got[4] != "four" {
		t.Fatalf("got %q", got)
	}
	if v := value(t, regB, "kiln_signals_dropped_total", "invalid"); v != 1 {
		t.Fatalf("dropped{reason=invalid} = %v, want 1", v)
	}
	if n, err := testutil.GatherAndCount(regB, "kiln_signals_queue_usage"); err != nil || n != 1 {
		t.Fatalf("kiln_signals_queue_usage: %d series, %v", n, err)
	}
	if err := testutil.GatherAndCompare(regB, strings.NewReader(`
# HELP kiln_signals_listening 1 while this server process hears the signals of the others (its LISTEN connection is up; always 1 on SQLite), else 0.
# TYPE kiln_signals_listening gauge
kiln_signals_listening 1
`), "kiln_signals_listening"); err != nil {
		t.Fatal(err)
	}
}

// TestPostgresReconnects cuts the listening connection from the server
// side, as a failover or an administrator would: the bus says it is down,
// comes back, tells its OnResync subscribers that signals may have been
// missed, and hears the others again.
func TestPostgresReconnects(t *testing.T) {
	dsn := testdb.Postgres(t)
	in := newInbox()
	var mu sync.Mutex
	resyncs := 0
	reg := prometheus.NewRegistry()
	b := pgBus(t, dsn, reg, func(b *signal.Bus) {
		b.Subscribe("cancel", in.add)
		b.OnResync(func() { mu.Lock(); resyncs++; mu.Unlock() })
	})
	a := pgBus(t, dsn, nil, func(b *signal.Bus) {})

	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var killed int
	if err := admin.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, signal.ApplicationName).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 2 {
		t.Fatalf("terminated %d listening connections, want 2 (one per bus)", killed)
	}
	// the bus notices at once: the termination arrives as an error on
	// the connection it reads
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := resyncs
		mu.Unlock()
		if n == 2 {
			break
		}
		if n > 2 || time.Now().After(deadline) {
			t.Fatalf("OnResync called %d times, want 2: at start and after the reconnection", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	awaitListening(t, b)
	awaitListening(t, a)
	a.Publish("cancel", "12 aborted")
	if got := in.await(t, 1); got[0] != "12 aborted" {
		t.Fatalf("got %q", got)
	}
	if v := value(t, reg, "kiln_signals_connections_total", ""); v != 2 {
		t.Fatalf("connections_total = %v, want 2", v)
	}
}

// value reads one series of a family from reg: the one whose only label
// has value label ("" for a family without labels).
func value(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if (label == "" && len(m.GetLabel()) == 0) || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label) {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no series %s{%s}", name, label)
	return 0
}
