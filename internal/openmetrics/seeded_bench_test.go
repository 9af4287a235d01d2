package openmetrics

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"testing"

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
		for b.Loop() {
			clear(w.h)
			e.ServeHTTP(w, req)
		}
	})
	b.Run("snapshot", func(b *testing.B) {
		b.ReportAllocs()
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
