package livelog_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kiln-build/kiln/internal/signal"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// notifyChunk relays a log chunk the other way this package could have:
// through NOTIFY itself. A payload is text of at most 8000 bytes, and a
// log holds any byte, so the chunk goes base64-encoded, cut into payloads,
// all in one statement.
func notifyChunk(ctx context.Context, db *sql.DB, id, offset int64, chunk []byte) error {
	enc := base64.StdEncoding.EncodeToString(chunk)
	var parts []string
	for len(enc) > 0 {
		n := min(len(enc), 7800)
		parts = append(parts, fmt.Sprintf("%d %d %s", id, offset, enc[:n]))
		enc = enc[n:]
	}
	_, err := db.ExecContext(ctx, "SELECT pg_notify('kiln_bench_log', s) FROM unnest($1::text[]) AS s", parts)
	return err
}

// drain listens on the benchmark's channel and reads everything, as a
// replica relaying logs through NOTIFY would, until ctx ends.
func drain(ctx context.Context, b *testing.B, dsn string) <-chan struct{} {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "LISTEN kiln_bench_log"); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer conn.Close(context.Background())
		for {
			if _, err := conn.WaitForNotification(ctx); err != nil {
				return
			}
		}
	}()
	return done
}

// BenchmarkRelay compares, on PostgreSQL, what a replica pays to relay one
// chunk of a live log: the table — the insert that the runner's session
// waits for (Relay.Append), then the short signal NOTIFY that package
// signal's sender goroutine sends — against NOTIFY of the chunk itself,
// with one listener reading the notifications as a second replica would.
// The two ways alternate within every iteration, so that the machine's
// noise hits both alike; the figures are the mean per chunk of each step,
// and the ratios of the table's steps to the NOTIFY.
func BenchmarkRelay(b *testing.B) {
	dsn := testdb.Postgres(b)
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	id := runningRequest(b, st)
	db := st.DB()
	for _, size := range []int{512, 4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("chunk=%dB", size), func(b *testing.B) {
			lctx, stop := context.WithCancel(ctx)
			drained := drain(lctx, b, dsn)
			defer func() { stop(); <-drained }()
			chunk := make([]byte, size)
			rand.Read(chunk)
			var insertTime, signalTime, notifyTime time.Duration
			var offset int64
			b.SetBytes(int64(size))
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				if err := st.AppendLiveLog(ctx, id, 0, offset, chunk); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, err := db.ExecContext(ctx, "SELECT pg_notify($1, s) FROM unnest($2::text[]) AS s", signal.Channel,
					[]string{fmt.Sprintf("0123456789ab log %d %d", id, offset+int64(size))}); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if err := notifyChunk(ctx, db, id, offset, chunk); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				insertTime += t1.Sub(t0)
				signalTime += t2.Sub(t1)
				notifyTime += t3.Sub(t2)
				offset += int64(size)
				if offset > store.MaxLiveLog {
					// start a fresh log now and then, so that trimming
					// is measured but the table does not grow for ever
					if err := st.DropLiveLog(ctx, id, 0); err != nil {
						b.Fatal(err)
					}
					offset = 0
				}
			}
			n := float64(b.N)
			b.ReportMetric(float64(insertTime.Microseconds())/n, "insert-µs/chunk")
			b.ReportMetric(float64(signalTime.Microseconds())/n, "signal-µs/chunk")
			b.ReportMetric(float64(notifyTime.Microseconds())/n, "notify-µs/chunk")
			b.ReportMetric(float64(insertTime)/float64(notifyTime), "insert/notify")
			b.ReportMetric(float64(insertTime+signalTime)/float64(notifyTime), "table/notify")
		})
	}
}

// BenchmarkNotifyQueue measures what relaying logs through NOTIFY would
// cost PostgreSQL's notification queue while one listener stalls: bytes
// of queue per byte of log, from pg_notification_queue_usage() (a
// fraction of the 8 GB queue) before and after sending, with a listener
// that never reads.
func BenchmarkNotifyQueue(b *testing.B) {
	dsn := testdb.Postgres(b)
	ctx := context.Background()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	stalled, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer stalled.Close(ctx)
	if _, err := stalled.Exec(ctx, "LISTEN kiln_bench_log"); err != nil {
		b.Fatal(err)
	}
	usage := func() float64 {
		var u float64
		if err := db.QueryRowContext(ctx, "SELECT pg_notification_queue_usage()").Scan(&u); err != nil {
			b.Fatal(err)
		}
		return u
	}
	chunk := make([]byte, 64<<10)
	rand.Read(chunk)
	const queue = 8 << 30 // max_notify_queue_pages × page size, PostgreSQL 15's default
	before := usage()
	var sent int64
	for b.Loop() {
		if err := notifyChunk(ctx, db, 1, sent, chunk); err != nil {
			b.Fatal(err)
		}
		sent += int64(len(chunk))
	}
	if sent < 32<<20 {
		// too little for the usage's page granularity: send more
		for ; sent < 32<<20; sent += int64(len(chunk)) {
			if err := notifyChunk(ctx, db, 1, sent, chunk); err != nil {
				b.Fatal(err)
			}
		}
	}
	grown := (usage() - before) * queue
	b.ReportMetric(grown/float64(sent), "queue-B/log-B")
	b.ReportMetric(float64(sent)/(1<<20), "log-MiB")
}
