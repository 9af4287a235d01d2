package openmetrics

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/kiln-build/kiln/internal/store"
)

// BenchmarkSeeded profiles an uncached scrape of a seeded farm step by
// step: set KILN_BENCH_DSN to one of the databases `kiln dev bench-scrape`
// keeps (e.g. postgres://…/kiln_bench_1000000_1000000) and run
//
//	go test -run '^$' -bench Seeded -cpuprofile cpu.prof ./internal/openmetrics
//
// scrape is the whole of it (snapshot, families, encoding) through the
// handler with caching off; the others work on one snapshot read once.
// cpu-ns/op is this process's CPU time (user and system) per operation:
// on a loaded machine ns/op also counts the waits for a core, and the
// database server's time.
func BenchmarkSeeded(b *testing.B) {
	dsn := os.Getenv("KILN_BENCH_DSN")
	if dsn == "" {
		b.Skip("KILN_BENCH_DSN not set: point it at a seeded database")
	}
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	snap, err := st.Snapshot(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("scrape", func(b *testing.B) {
		e := New(st, Options{})
		req, _ := http.NewRequest("GET", "/api/1.0/open-metrics/", nil)
		req.Header.Set("Accept", acceptOpenMetrics)
		w := &discard{h: http.Header{}}
		e.ServeHTTP(w, req) // fills the series cache, as a server's first scrape does
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			clear(w.h)
			e.ServeHTTP(w, req)
		}
	})
	b.Run("snapshot", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			if _, err := st.Snapshot(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("gather", func(b *testing.B) {
		cache := newSeriesCache()
		gatherCached(snap, cache)
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			if _, err := gatherCached(snap, cache); err != nil {
				b.Fatal(err)
			}
		}
	})
	fams, err := Gather(snap)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode", func(b *testing.B) {
		format := negotiate(http.Header{"Accept": {acceptOpenMetrics}})
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			var buf bytes.Buffer
			buf.Grow(2 << 20)
			enc := expfmt.NewEncoder(&buf, format)
			for _, mf := range fams {
				if err := enc.Encode(mf); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// reportCPU starts counting this process's CPU time; the function it
// returns reports it per operation.
func reportCPU(b *testing.B) func() {
	start := processCPU()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
