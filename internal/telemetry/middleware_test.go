package telemetry

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	patternShow   = "GET /api/1.0/work-requests/{id}/"
	patternCreate = "POST /api/1.0/work-requests/"
	patternHealth = "GET /-/healthy"
	patternRaw    = "GET /raw"
	patternPanic  = "GET /panic"
	patternTeapot = "GET /teapot"
)

// apiFixture is a small API server wired the way kiln's server is.
type apiFixture struct {
	reg     *prometheus.Registry
	m       *HTTPMetrics
	handler http.Handler
}

func newAPIFixture(t testing.TB) *apiFixture {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := NewHTTPMetrics(reg, "kiln", "http")
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok "+r.PathValue("id"))
	})
	mux := http.NewServeMux()
	m.Handle(mux, patternShow, ok)
	m.Handle(mux, patternCreate, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusCreated)
	}))
	m.Handle(mux, patternPanic, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	m.Handle(mux, patternTeapot, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusEarlyHints) // interim; the final status follows
		w.WriteHeader(http.StatusTeapot)
	}))
	m.HandleUninstrumented(mux, patternHealth, ok)
	mux.Handle(patternRaw, ok) // registered without the helpers
	return &apiFixture{reg: reg, m: m, handler: m.CountUnmatched(mux)}
}

func (f *apiFixture) serve(method, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

// series returns the label sets of kiln_http_requests_total as
// "method route code" strings mapped to their values.
func (f *apiFixture) series(t *testing.T) map[string]float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "kiln_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			out[l["method"]+" "+l["route"]+" "+l["code"]] = m.GetCounter().GetValue()
		}
	}
	return out
}

func TestHTTPMetricsLabels(t *testing.T) {
	tests := []struct {
		name     string
		requests [][2]string // method, path
		want     map[string]float64
	}{
		{
			name:     "ids share the route pattern",
			requests: [][2]string{{"GET", "/api/1.0/work-requests/1/"}, {"GET", "/api/1.0/work-requests/2/"}, {"GET", "/api/1.0/work-requests/999/"}},
			want:     map[string]float64{"get " + patternShow + " 200": 3},
		},
		{
			name:     "status code of the handler",
			requests: [][2]string{{"POST", "/api/1.0/work-requests/"}},
			want:     map[string]float64{"post " + patternCreate + " 201": 1},
		},
		{
			name:     "HEAD matches a GET pattern",
			requests: [][2]string{{"HEAD", "/api/1.0/work-requests/1/"}},
			want:     map[string]float64{"head " + patternShow + " 200": 1},
		},
		{
			name:     "unknown paths share one series",
			requests: [][2]string{{"GET", "/wp-admin"}, {"GET", "/.env"}, {"GET", "/api/1.0/nothing/"}},
			want:     map[string]float64{"get unmatched 404": 3},
		},
		{
			name:     "wrong method is unmatched 405",
			requests: [][2]string{{"DELETE", "/api/1.0/work-requests/1/"}},
			want:     map[string]float64{"delete unmatched 405": 1},
		},
		{
			name:     "odd methods are bounded",
			requests: [][2]string{{"PROPFIND", "/x"}, {"BREW", "/y"}, {"get", "/z"}},
			want:     map[string]float64{"other unmatched 404": 3},
		},
		{
			name:     "trailing-slash redirect is counted under the route it leads to",
			requests: [][2]string{{"POST", "/api/1.0/work-requests"}},
			want:     map[string]float64{"post " + patternCreate + " 307": 1},
		},
		{
			name:     "opted-out route has no series",
			requests: [][2]string{{"GET", "/-/healthy"}, {"GET", "/-/healthy"}},
			want:     map[string]float64{},
		},
		{
			name:     "route registered without helpers is counted by its pattern",
			requests: [][2]string{{"GET", "/raw"}},
			want:     map[string]float64{"get " + patternRaw + " 200": 1},
		},
		{
			name:     "interim 1xx is not the status",
			requests: [][2]string{{"GET", "/teapot"}},
			want:     map[string]float64{"get " + patternTeapot + " 418": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newAPIFixture(t)
			for _, r := range tt.requests {
				f.serve(r[0], r[1])
			}
			got := f.series(t)
			if len(got) != len(tt.want) {
				t.Errorf("got %d series %v, want %d %v", len(got), got, len(tt.want), tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("series %q = %v, want %v (all: %v)", k, got[k], v, got)
				}
			}
			// The histogram has exactly the counter's label sets.
			if n, c := testutil.CollectAndCount(f.m.duration), testutil.CollectAndCount(f.m.requests); n != c {
				t.Errorf("duration has %d series, requests %d", n, c)
			}
			if v := testutil.ToFloat64(f.m.inFlight); v != 0 {
				t.Errorf("in flight = %v after all requests returned, want 0", v)
			}
		})
	}
}

func TestHTTPMetricsRandomPathsAddOneSeries(t *testing.T) {
	f := newAPIFixture(t)
	f.serve("GET", "/api/1.0/work-requests/1/")
	before := testutil.CollectAndCount(f.m.requests)

	for range 100 {
		rec := f.serve("GET", fmt.Sprintf("/%x/%x", rand.Uint64(), rand.Uint64()))
		if rec.Code != http.StatusNotFound {
			t.Fatalf("random path answered %d", rec.Code)
		}
	}
	if after := testutil.CollectAndCount(f.m.requests); after > before+1 {
		t.Errorf("100 random paths added %d series to requests_total, want at most 1", after-before)
	}
	if after := testutil.CollectAndCount(f.m.duration); after > before+1 {
		t.Errorf("100 random paths added %d series to request_duration_seconds, want at most 1", after-before)
	}
	if got := testutil.ToFloat64(f.m.requests.WithLabelValues("get", RouteUnmatched, "404")); got != 100 {
		t.Errorf("unmatched 404 count = %v, want 100", got)
	}
}

func TestHTTPMetricsInFlight(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewHTTPMetrics(reg, "kiln", "http")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	var arrived sync.WaitGroup
	arrived.Add(n)
	release := make(chan struct{})
	mux := http.NewServeMux()
	m.Handle(mux, "GET /slow", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		arrived.Done()
		<-release
	}))
	h := m.CountUnmatched(mux)

	var finished sync.WaitGroup
	for range n {
		finished.Go(func() { h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/slow", nil)) })
	}
	arrived.Wait()
	if v := testutil.ToFloat64(m.inFlight); v != n {
		t.Errorf("in flight = %v while %d requests wait, want %d", v, n, n)
	}
	close(release)
	finished.Wait()
	if v := testutil.ToFloat64(m.inFlight); v != 0 {
		t.Errorf("in flight = %v after all returned, want 0", v)
	}
	if v := testutil.ToFloat64(m.requests.WithLabelValues("get", "GET /slow", "200")); v != n {
		t.Errorf("requests = %v, want %d", v, n)
	}
}

// TestHTTPMetricsPanic: a handler's panic is counted on its own, logged
// with its stack and answered 500; one that had begun its answer cuts the
// connection; http.ErrAbortHandler, a deliberate abort, is no panic.
func TestHTTPMetricsPanic(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	var logs strings.Builder
	m, err := NewHTTPMetrics(reg, "kiln", "http", WithPanicLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	m.Handle(mux, "GET /bug", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("index out of range") }))
	m.Handle(mux, "GET /late-bug", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "half an answer")
		panic("nil map")
	}))
	h := m.CountUnmatched(mux)

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/bug", nil))
	if rec.Code != 500 || rec.Header().Get("Content-Type") != "application/problem+json" || !strings.Contains(rec.Body.String(), `"status":500`) {
		t.Errorf("a panicking handler answered %d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	if !strings.Contains(logs.String(), "panic serving an HTTP request") || !strings.Contains(logs.String(), "index out of range") ||
		!strings.Contains(logs.String(), "middleware_test.go") {
		t.Errorf("the panic was not logged with its stack:\n%s", logs.String())
	}
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Errorf("a panic after the answer began: %v, want http.ErrAbortHandler to cut the connection", p)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/late-bug", nil))
	}()
	for _, c := range []struct {
		route string
		want  float64
	}{{"GET /bug", 1}, {"GET /late-bug", 1}} {
		if v := testutil.ToFloat64(m.panics.WithLabelValues(c.route)); v != c.want {
			t.Errorf("panics_total{%s} = %v, want %v", c.route, v, c.want)
		}
		if v := testutil.ToFloat64(m.requests.WithLabelValues("get", c.route, "500")); v != 1 {
			t.Errorf("requests_total{%s,500} = %v, want 1", c.route, v)
		}
	}
	if v := testutil.ToFloat64(m.inFlight); v != 0 {
		t.Errorf("in flight = %v after panics, want 0", v)
	}

	// and over real HTTP: the client gets the 500, not a dropped connection
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/bug")
	if err != nil {
		t.Fatalf("GET /bug over HTTP: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Errorf("GET /bug over HTTP: %d", resp.StatusCode)
	}
}

func TestHTTPMetricsAbortHandler(t *testing.T) {
	f := newAPIFixture(t)
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Errorf("panic value %v, want http.ErrAbortHandler passed on", p)
			}
		}()
		f.serve("GET", "/panic")
	}()
	if got := f.series(t); got["get "+patternPanic+" 500"] != 1 || len(got) != 1 {
		t.Errorf("series after an abort: %v, want one 500", got)
	}
	if v := testutil.ToFloat64(f.m.panics.WithLabelValues(patternPanic)); v != 0 {
		t.Errorf("an abort counted as a panic")
	}
	if n := testutil.CollectAndCount(f.m.panics); n != 4 {
		t.Errorf("panics_total has %d series, want one at 0 for each of the 4 instrumented routes", n)
	}
	if v := testutil.ToFloat64(f.m.inFlight); v != 0 {
		t.Errorf("in flight = %v after a panic, want 0", v)
	}
}

// TestHTTPMetricsWrapAlone covers Wrap used without a mux around it.
func TestHTTPMetricsWrapAlone(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewHTTPMetrics(reg, "kiln", "http")
	if err != nil {
		t.Fatal(err)
	}
	m.Wrap(http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil))
	if v := testutil.ToFloat64(m.requests.WithLabelValues("get", RouteUnmatched, "404")); v != 1 {
		t.Errorf("unmatched 404 = %v, want 1", v)
	}
}

func TestNewHTTPMetricsConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewHTTPMetrics(reg, "kiln", "http"); err != nil {
		t.Fatal(err)
	}
	if _, err := NewHTTPMetrics(reg, "kiln", "http"); err == nil {
		t.Error("second NewHTTPMetrics with the same names succeeded")
	}
	// A failed constructor must not leave half its metrics registered.
	reg2 := prometheus.NewRegistry()
	reg2.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_http_requests_in_flight", Help: "x"}))
	if _, err := NewHTTPMetrics(reg2, "kiln", "http"); err == nil {
		t.Fatal("NewHTTPMetrics over an existing gauge succeeded")
	}
	again := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_http_requests_total", Help: "HTTP requests answered, by method, route pattern and status code."}, []string{"method", "route", "code"})
	if err := reg2.Register(again); err != nil {
		t.Errorf("failed NewHTTPMetrics left kiln_http_requests_total registered: %v", err)
	}
}

// TestHTTPMetricsKeepsStreamingAndUpgrades proves instrumentation does not
// take Flush and Hijack away from a handler (websockets need Hijack).
func TestHTTPMetricsKeepsStreamingAndUpgrades(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewHTTPMetrics(reg, "kiln", "http")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	m.Handle(mux, "GET /stream", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if _, ok := w.(http.Flusher); !ok {
			t.Error("instrumented writer is not an http.Flusher")
		}
		io.WriteString(w, "part")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
	}))
	m.Handle(mux, "GET /upgrade", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "kiln-test")
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString("hello over the upgraded connection\n")
		brw.Flush()
	}))
	base := startServer(t, m.CountUnmatched(mux))

	if resp, body := do(t, "GET", base+"/stream", nil); resp.StatusCode != 200 || body != "part" {
		t.Errorf("stream: %d %q", resp.StatusCode, body)
	}

	req, _ := http.NewRequest("GET", base+"/upgrade", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "kiln-test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: status %d", resp.StatusCode)
	}
	line, err := bufio.NewReader(resp.Body.(io.Reader)).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "hello") {
		t.Errorf("upgraded connection read %q, %v", line, err)
	}

	deadline := time.Now().Add(2 * time.Second)
	for testutil.ToFloat64(m.requests.WithLabelValues("get", "GET /upgrade", "101")) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("upgrade request not counted as 101")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGatherAndLint lints every metric family this package defines, filled
// with samples, together with the Go and process collectors.
func TestGatherAndLint(t *testing.T) {
	reg := NewRegistry()
	m, err := NewHTTPMetrics(reg, "kiln", "http")
	if err != nil {
		t.Fatal(err)
	}
	out, err := NewOutgoingMetrics(reg, "kiln")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := NewEventMetrics(reg, "kiln")
	if err != nil {
		t.Fatal(err)
	}
	if err := RegisterBuildInfo(reg, ReadBuildInfo()); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	m.Handle(mux, patternShow, http.NotFoundHandler())
	m.CountUnmatched(mux).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/api/1.0/work-requests/1/", nil))
	out.RoundTripper("server", nil)
	ev.Observe("github", "push", EventProcessed)
	// The internal mux adds promhttp's own metrics; lint those too.
	NewInternalMux(reg).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/metrics", nil))

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	for _, name := range []string{
		"kiln_http_requests_total", "kiln_http_request_duration_seconds", "kiln_http_requests_in_flight",
		"kiln_outgoing_requests_total", "kiln_incoming_events_total", "kiln_build_info",
		"promhttp_metric_handler_requests_total", "go_goroutines", "process_cpu_seconds_total",
	} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n == 0 {
			t.Errorf("%s: %d series, %v; want it exported", name, n, err)
		}
	}
}

// BenchmarkMiddleware measures what instrumentation costs a trivial handler,
// both served through the same mux in the same run.
func BenchmarkMiddleware(b *testing.B) {
	hello := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hi") })
	const pattern = "GET /api/1.0/work-requests/{id}/"

	plain := http.NewServeMux()
	plain.Handle(pattern, hello)

	m, err := NewHTTPMetrics(prometheus.NewRegistry(), "kiln", "http")
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	m.Handle(mux, pattern, hello)
	instrumented := m.CountUnmatched(mux)

	for _, bc := range []struct {
		name string
		h    http.Handler
	}{{"plain", plain}, {"instrumented", instrumented}} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/api/1.0/work-requests/42/", nil)
			b.ReportAllocs()
			for b.Loop() {
				bc.h.ServeHTTP(discardWriter{}, req)
			}
		})
	}
}

// discardWriter is a minimal ResponseWriter, so that the benchmark measures
// the middleware rather than httptest.ResponseRecorder.
type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}

// TestHTTPMetricsBehindAWrappingMiddleware: a middleware between
// CountUnmatched and the mux that wraps the writer (with Unwrap, as
// http.ResponseController expects) does not make requests count twice.
func TestHTTPMetricsBehindAWrappingMiddleware(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewHTTPMetrics(reg, "kiln", "http")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	m.Handle(mux, "GET /x", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
	}))
	m.HandleUninstrumented(mux, "GET /probe", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	wrapping := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(unwrapper{w}, r)
	})
	h := m.CountUnmatched(wrapping)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/probe", nil))
	if n := testutil.CollectAndCount(m.requests); n != 1 {
		t.Errorf("%d series, want 1", n)
	}
	if v := testutil.ToFloat64(m.requests.WithLabelValues("get", "GET /x", "202")); v != 1 {
		t.Errorf("GET /x counted %v times, want 1", v)
	}
}

type unwrapper struct{ http.ResponseWriter }

func (u unwrapper) Unwrap() http.ResponseWriter { return u.ResponseWriter }
