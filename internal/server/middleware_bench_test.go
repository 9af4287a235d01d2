package server

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// benchHandlers builds the public handler of a server on SQLite twice over
// the same store: as the server serves it (every API route instrumented by
// newHandler) and with the same routes registered bare.
func benchHandlers(b *testing.B) (plain, instrumented http.Handler, token string) {
	b.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(b.TempDir(), "kiln.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	token = "kiln_benchmark_admin_token_0123"
	if _, err := st.Bootstrap(ctx, token, b.TempDir()); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"debian", "ubuntu", "kali", "tails", "grml"} {
		if err := st.Scopes().Create(ctx, &model.Scope{Name: name}); err != nil {
			b.Fatal(err)
		}
	}
	logger := slog.New(slog.DiscardHandler)
	instrumented, err = newHandler(st, localBus(b), Config{}, logger, prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	routes, err := apiRoutes(st, Config{}, logger, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, r := range routes {
		mux.Handle(r.Pattern, r.Handler)
	}
	return mux, instrumented, token
}

// discard is a minimal ResponseWriter, so that the benchmark measures the
// handlers rather than a recorder.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

func scopesRequest(token string) *http.Request {
	req, _ := http.NewRequest(http.MethodGet, "/api/1.0/scopes/", nil)
	req.Header.Set("Authorization", "Token "+token)
	return req
}

// BenchmarkAPIScopes serves GET /api/1.0/scopes/ (authenticated, five
// scopes, SQLite) through the bare routes and through the instrumented
// handler, as two sub-benchmarks.
func BenchmarkAPIScopes(b *testing.B) {
	plain, instrumented, token := benchHandlers(b)
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{{"plain", plain}, {"instrumented", instrumented}} {
		b.Run(bc.name, func(b *testing.B) {
			req := scopesRequest(token)
			b.ReportAllocs()
			for b.Loop() {
				bc.h.ServeHTTP(&discard{h: http.Header{}}, req)
			}
		})
	}
}

// BenchmarkAPIMiddlewareOverhead measures both handlers in one loop,
// interleaved request by request (alternating which goes first), so that
// load from other work on the machine falls on both alike, and reports the
// overhead of instrumentation as a percentage of the plain request's time.
func BenchmarkAPIMiddlewareOverhead(b *testing.B) {
	plain, instrumented, token := benchHandlers(b)
	req := scopesRequest(token)
	for range 200 { // warm the database's caches and the pool
		plain.ServeHTTP(&discard{h: http.Header{}}, req)
		instrumented.ServeHTTP(&discard{h: http.Header{}}, req)
	}
	var tPlain, tInstr time.Duration
	n := 0
	for b.Loop() {
		first, second := plain, instrumented
		if n%2 == 1 {
			first, second = instrumented, plain
		}
		t0 := time.Now()
		first.ServeHTTP(&discard{h: http.Header{}}, req)
		t1 := time.Now()
		second.ServeHTTP(&discard{h: http.Header{}}, req)
		t2 := time.Now()
		if n%2 == 0 {
			tPlain, tInstr = tPlain+t1.Sub(t0), tInstr+t2.Sub(t1)
		} else {
			tInstr, tPlain = tInstr+t1.Sub(t0), tPlain+t2.Sub(t1)
		}
		n++
	}
	b.ReportMetric(float64(tPlain.Nanoseconds())/float64(n), "plain-ns/req")
	b.ReportMetric(float64(tInstr.Nanoseconds())/float64(n), "instrumented-ns/req")
	b.ReportMetric(100*(float64(tInstr)-float64(tPlain))/float64(tPlain), "overhead-%")
}
