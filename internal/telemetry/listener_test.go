package telemetry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// startServer serves h on 127.0.0.1 with a free port and returns its base
// URL; the server stops, and its Serve result is checked, when the test ends.
func startServer(t *testing.T, h http.Handler) string {
	t.Helper()
	s, err := Listen("127.0.0.1:0", h, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve after cancel: %v", err)
			}
		case <-time.After(ShutdownTimeout + 5*time.Second):
			t.Error("Serve did not return after its context was cancelled")
		}
	})
	return "http://" + s.Addr().String()
}

func testRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_test_events_total", Help: "Events seen by the test."})
	c.Add(3)
	reg.MustRegister(c)
	return reg
}

func do(t *testing.T, method, url string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestInternalMux(t *testing.T) {
	base := startServer(t, NewInternalMux(testRegistry(t),
		WithHandler("GET /-/healthy", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })),
	))

	tests := []struct {
		name       string
		method     string
		path       string
		header     map[string]string
		wantStatus int
		wantBody   string // substring
		wantHeader map[string]string
	}{
		{name: "metrics text", method: "GET", path: "/metrics", wantStatus: 200, wantBody: "kiln_test_events_total 3",
			wantHeader: map[string]string{"Content-Type": "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"}},
		{name: "metrics openmetrics", method: "GET", path: "/metrics",
			header:     map[string]string{"Accept": "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;q=0.5"},
			wantStatus: 200, wantBody: "# EOF", wantHeader: map[string]string{"Content-Type": "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"}},
		{name: "metrics has go runtime", method: "GET", path: "/metrics", wantStatus: 200, wantBody: "go_goroutines"},
		{name: "metrics has process", method: "GET", path: "/metrics", wantStatus: 200, wantBody: "process_start_time_seconds"},
		{name: "metrics head", method: "HEAD", path: "/metrics", wantStatus: 200},
		{name: "metrics post", method: "POST", path: "/metrics", wantStatus: 405, wantHeader: map[string]string{"Allow": "GET, HEAD"}},
		{name: "metrics delete", method: "DELETE", path: "/metrics", wantStatus: 405, wantHeader: map[string]string{"Allow": "GET, HEAD"}},
		{name: "pprof index", method: "GET", path: "/debug/pprof/", wantStatus: 200, wantBody: "goroutine"},
		{name: "pprof goroutine", method: "GET", path: "/debug/pprof/goroutine?debug=1", wantStatus: 200, wantBody: "goroutine profile"},
		{name: "pprof cmdline", method: "GET", path: "/debug/pprof/cmdline", wantStatus: 200},
		{name: "pprof symbol", method: "GET", path: "/debug/pprof/symbol", wantStatus: 200, wantBody: "num_symbols"},
		{name: "index", method: "GET", path: "/", wantStatus: 200, wantBody: "/metrics"},
		{name: "extra handler", method: "GET", path: "/-/healthy", wantStatus: 200, wantBody: "ok"},
		{name: "unknown path", method: "GET", path: "/nope", wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, base+tt.path, tt.header)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("%s %s: status %d, want %d; body:\n%s", tt.method, tt.path, resp.StatusCode, tt.wantStatus, body)
			}
			if !strings.Contains(body, tt.wantBody) {
				t.Errorf("%s %s: body does not contain %q:\n%.2000s", tt.method, tt.path, tt.wantBody, body)
			}
			for k, v := range tt.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s %s: header %s = %q, want %q", tt.method, tt.path, k, got, v)
				}
			}
		})
	}
}

func TestInternalMuxWithoutPprof(t *testing.T) {
	base := startServer(t, NewInternalMux(testRegistry(t), WithoutPprof()))
	if resp, _ := do(t, "GET", base+"/debug/pprof/", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without pprof: status %d, want 404", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", base+"/metrics", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("/metrics: status %d, want 200", resp.StatusCode)
	}
}

// TestNewRegistryGoCollector guards the DEPENDENCIES.md gotcha: the
// registry carries client_golang's default Go collector (go_memstats_*,
// go_gc_duration_seconds), which dashboards expect, and not the whole
// runtime/metrics collection with its dozens of go_godebug_* families. Its
// OpenMetrics exposition ends properly and names no family twice apart
// from the one known pair (go_memstats_alloc_bytes, gauge and counter).
func TestNewRegistryGoCollector(t *testing.T) {
	base := startServer(t, NewInternalMux(testRegistry(t)))
	_, body := do(t, "GET", base+"/metrics", map[string]string{"Accept": "application/openmetrics-text;version=1.0.0"})
	if !strings.HasSuffix(body, "# EOF\n") {
		t.Fatalf("not OpenMetrics:\n%.500s", body)
	}
	seen := map[string]int{}
	for line := range strings.SplitSeq(body, "\n") {
		rest, ok := strings.CutPrefix(line, "# TYPE ")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, " ")
		seen[name]++
		if strings.HasPrefix(name, "go_godebug_") {
			t.Errorf("%s exported: the Go collector should be the default one", name)
		}
	}
	for name, n := range seen {
		if n > 1 && name != "go_memstats_alloc_bytes" {
			t.Errorf("family %s appears %d times in the OpenMetrics exposition", name, n)
		}
	}
	for _, want := range []string{"go_memstats_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_gc_duration_seconds", "go_goroutines", "process_cpu_seconds"} {
		if seen[want] == 0 {
			t.Errorf("%s missing from the exposition", want)
		}
	}
}

func TestListenErrors(t *testing.T) {
	if _, err := Listen("127.0.0.1:0", nil, nil); err == nil || !strings.Contains(err.Error(), "DefaultServeMux") {
		t.Errorf("Listen with nil handler: err = %v, want refusal naming DefaultServeMux", err)
	}

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, err := Listen(busy.Addr().String(), http.NotFoundHandler(), nil); err == nil {
		t.Errorf("Listen on busy %s succeeded, want an error at start-up", busy.Addr())
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	s, err := Listen("127.0.0.1:0", http.NotFoundHandler(), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	// Serving: a request gets an answer.
	if resp, _ := do(t, "GET", "http://"+addr+"/", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d, want 404", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v after cancel, want nil", err)
		}
	case <-time.After(ShutdownTimeout + 5*time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after shutdown", addr)
	}
}

func TestServeWaitsForInFlight(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	})
	s, err := Listen("127.0.0.1:0", h, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + s.Addr().String() + "/")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	<-started
	cancel()
	time.Sleep(50 * time.Millisecond) // let Shutdown begin
	close(release)
	r := <-got
	if r.err != nil || r.body != "finished" {
		t.Errorf("in-flight request during shutdown: body %q, err %v; want it to finish", r.body, r.err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestServeHelper(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Serve(ctx, "127.0.0.1:0", http.NotFoundHandler(), nil); err != nil {
		t.Errorf("Serve with cancelled context: %v, want nil", err)
	}
	err := Serve(context.Background(), "127.0.0.1:99999", http.NotFoundHandler(), nil)
	if err == nil {
		t.Error("Serve on a bad address succeeded")
	}
	var opErr *net.OpError
	if err != nil && !errors.As(err, &opErr) && !strings.Contains(err.Error(), "invalid port") {
		t.Errorf("Serve on a bad address: unexpected error %v", err)
	}
}

func TestServerClose(t *testing.T) {
	s, err := Listen("127.0.0.1:0", http.NotFoundHandler(), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The port is free again.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port not released by Close: %v", err)
	}
	ln.Close()
}
