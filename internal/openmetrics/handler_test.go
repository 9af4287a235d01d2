package openmetrics

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

// fakeSource counts Snapshot calls. With a gate, each call waits for it
// to be closed (or its context to end) before answering.
type fakeSource struct {
	calls atomic.Int32
	gate  chan struct{}
	snap  *store.Snapshot
	err   error
	// ctxErr records the context's error when a gated call was released.
	ctxErr atomic.Value
}

func (f *fakeSource) Snapshot(ctx context.Context) (*store.Snapshot, error) {
	f.calls.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
		}
		f.ctxErr.Store(errString(ctx.Err()))
	}
	return f.snap, f.err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// smallSnapshot has a few series in two scopes and scope-less families.
func smallSnapshot() *store.Snapshot {
	s := snapshot(
		tot("artifacts", 2, "category", "debian:upload", "scope_id", "1"),
		tot("artifacts", 1, "category", "debian:upload", "scope_id", "2"),
		tot("work_requests", 2, "task_type", "Worker", "task_name", "sbuild", "scope_id", "1", "status", "pending", "host_architecture", "amd64", "backend", "auto"),
		tot("work_requests", 5, "task_type", "Worker", "task_name", "sbuild", "scope_id", "2", "status", "pending", "host_architecture", "amd64", "backend", "auto"),
		tot("users", 3, "active", "1"),
		tot("workers", 1, "connected", "1", "busy", "0", "worker_type", "external", "architectures", "amd64", "host_architecture", "amd64"),
	)
	s.Activity = []store.Activity{{ScopeID: 2, LastWorkflowAt: farmNow.Add(-day), Issuers: []string{"salsa.debian.org"}}}
	return s
}

func do(t *testing.T, h http.Handler, method string, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, "/api/1.0/open-metrics/", nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestNegotiation(t *testing.T) {
	h := NewHandler(&fakeSource{snap: smallSnapshot()}, Options{})
	for _, tc := range []struct {
		name, accept, wantType string
		eof                    bool
	}{
		{"Prometheus asks for OpenMetrics", acceptOpenMetrics, "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores", true},
		{"OpenMetrics without version", "application/openmetrics-text", "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores", true},
		{"text", acceptText, "text/plain; version=0.0.4; charset=utf-8; escaping=underscores", false},
		{"no Accept header", "", "text/plain; version=0.0.4; charset=utf-8; escaping=underscores", false},
		{"protobuf is not offered", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", "text/plain; version=0.0.4; charset=utf-8; escaping=underscores", false},
		{"UTF-8 names allowed", "text/plain;version=0.0.4;escaping=allow-utf-8", "text/plain; version=0.0.4; charset=utf-8; escaping=allow-utf-8", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := do(t, h, "GET", map[string]string{"Accept": tc.accept})
			if rec.Code != 200 || rec.Header().Get("Content-Type") != tc.wantType {
				t.Fatalf("%d %q, want 200 %q", rec.Code, rec.Header().Get("Content-Type"), tc.wantType)
			}
			if got := strings.HasSuffix(rec.Body.String(), "# EOF\n"); got != tc.eof {
				t.Errorf("ends with # EOF: %v, want %v", got, tc.eof)
			}
			if tc.eof {
				parseOpenMetrics(t, rec.Body.Bytes())
			} else {
				parseText(t, rec.Body.Bytes())
			}
			if v := rec.Header().Get("Vary"); !strings.Contains(v, "Accept") {
				t.Errorf("Vary: %q", v)
			}
		})
	}
}

func TestMethods(t *testing.T) {
	e := New(&fakeSource{snap: smallSnapshot()}, Options{})
	for _, h := range []http.Handler{e, e.ServiceStatus()} {
		rec := do(t, h, "POST", nil)
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("POST: %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
		}
		head := do(t, h, "HEAD", nil)
		get := do(t, h, "GET", nil)
		if head.Code != 200 || head.Body.Len() != 0 || head.Header().Get("Content-Length") != get.Header().Get("Content-Length") {
			t.Errorf("HEAD: %d, %d bytes, length %q vs GET %q", head.Code, head.Body.Len(), head.Header().Get("Content-Length"), get.Header().Get("Content-Length"))
		}
	}
}

func TestScopeRestriction(t *testing.T) {
	scopeOf := func(r *http.Request) (int64, bool, error) {
		switch r.Header.Get("Authorization") {
		case "":
			return 0, false, nil
		case "Token debian":
			return 1, true, nil
		case "Token gone":
			return 42, true, nil // a scope deleted since the token was made
		}
		return 0, false, errors.New("invalid token")
	}
	e := New(&fakeSource{snap: smallSnapshot()}, Options{ScopeOf: scopeOf})
	all := parseText(t, do(t, e, "GET", nil).Body.Bytes())

	rec := do(t, e, "GET", map[string]string{"Authorization": "Token bad"})
	if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") == "" || strings.Contains(rec.Body.String(), "artifacts") {
		t.Errorf("bad token: %d %q %q", rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body)
	}
	if rec := do(t, e.ServiceStatus(), "GET", map[string]string{"Authorization": "Token bad"}); rec.Code != http.StatusUnauthorized {
		t.Errorf("bad token on service-status: %d", rec.Code)
	}

	debian := parseText(t, do(t, e, "GET", map[string]string{"Authorization": "Token debian"}).Body.Bytes())
	for k, v := range all.samples {
		scoped := strings.Contains(k, `scope="`)
		got, ok := debian.samples[k]
		switch {
		case !scoped && (!ok || got != v):
			t.Errorf("scope-less %s changed: %v → %v", k, v, got)
		case scoped && strings.Contains(k, `scope="debian"`) && (!ok || got != v):
			t.Errorf("%s of the token's scope changed: %v → %v", k, v, got)
		case scoped && !strings.Contains(k, `scope="debian"`) && ok:
			t.Errorf("%s of another scope is visible", k)
		}
	}
	if _, ok := debian.types["user_activity"]; ok {
		t.Error("user_activity has only kali series and must be absent")
	}

	gone := parseText(t, do(t, e, "GET", map[string]string{"Authorization": "Token gone"}).Body.Bytes())
	for k := range gone.samples {
		if strings.Contains(k, `scope="`) {
			t.Errorf("a token of a deleted scope sees %s", k)
		}
	}
	if gone.samples[`users{active="1"}`] != 3 {
		t.Error("scope-less families must stay")
	}

	st := fetchStatus(t, statusWithAuth(e, "Token debian"))
	if st.Tasks["Worker"].Pending != 2 || st.Workers["external"].Registered != 1 {
		t.Errorf("restricted status: %+v %+v", st.Tasks, st.Workers)
	}
}

func statusWithAuth(e *Endpoint, auth string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("Authorization", auth)
		e.ServiceStatus().ServeHTTP(w, r)
	})
}

// TestBadFamily registers a failing and a panicking family: the scrape
// still answers 200 with every other family, and the failures go to the
// log only.
func TestBadFamily(t *testing.T) {
	register("zz_failing", func(*build) (*dto.MetricFamily, error) { return nil, errors.New("boom-failing") })
	register("zz_panicking", func(*build) (*dto.MetricFamily, error) { panic("boom-panicking") })
	register("zz_invalid", func(b *build) (*dto.MetricFamily, error) {
		g := b.gauges("zz_invalid", "bad-label")
		g.l.set("bad-label", "x")
		g.add(1)
		return g.family("invalid label name")
	})
	t.Cleanup(func() {
		delete(families, "zz_failing")
		delete(families, "zz_panicking")
		delete(families, "zz_invalid")
	})
	var logs bytes.Buffer
	h := NewHandler(&fakeSource{snap: smallSnapshot()}, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for _, accept := range []string{acceptText, acceptOpenMetrics} {
		rec := scrapeHTTP(t, h, accept)
		body := rec.Body.String()
		if !strings.Contains(body, "# TYPE artifacts gauge") || !strings.Contains(body, "# TYPE workers gauge") {
			t.Errorf("good families missing:\n%s", body)
		}
		if strings.Contains(body, "zz_") || strings.Contains(body, "boom") {
			t.Errorf("bad families or their errors reached the output:\n%s", body)
		}
	}
	for _, want := range []string{"zz_failing", "boom-failing", "zz_panicking", "boom-panicking", "zz_invalid"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not mention %s:\n%s", want, logs.String())
		}
	}
}

func TestSnapshotError(t *testing.T) {
	var logs bytes.Buffer
	src := &fakeSource{err: errors.New("connection refused to db.internal:5432")}
	e := New(src, Options{CacheTTL: time.Minute, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for _, h := range []http.Handler{e, e.ServiceStatus()} {
		rec := do(t, h, "GET", nil)
		if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "db.internal") {
			t.Errorf("%d %q: want 500 without internals", rec.Code, rec.Body)
		}
	}
	if !strings.Contains(logs.String(), "db.internal") {
		t.Error("the error is not logged")
	}
	if src.calls.Load() != 2 {
		t.Errorf("errors must not be cached: %d calls", src.calls.Load())
	}
}

// TestCacheSharedRefresh: with a TTL, concurrent scrapes that arrive while
// a refresh runs wait for it, so N scrapes read one snapshot.
func TestCacheSharedRefresh(t *testing.T) {
	clk := &testClock{t: farmNow}
	src := &fakeSource{snap: smallSnapshot(), gate: make(chan struct{})}
	e := New(src, Options{CacheTTL: 30 * time.Second, Now: clk.Now})
	const n = 20
	var wg sync.WaitGroup
	bodies := make([]string, n)
	codes := make([]int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			h := http.Handler(e)
			if i%2 == 1 {
				h = e.ServiceStatus()
			}
			rec := do(t, h, "GET", nil)
			bodies[i], codes[i] = rec.Body.String(), rec.Code
		}(i)
	}
	waitFor(t, func() bool { return src.calls.Load() >= 1 })
	time.Sleep(50 * time.Millisecond) // let every scrape join the refresh
	close(src.gate)
	wg.Wait()
	if got := src.calls.Load(); got != 1 {
		t.Fatalf("%d concurrent scrapes made %d snapshot calls, want 1", n, got)
	}
	for i := range bodies {
		if codes[i] != 200 || bodies[i] != bodies[i%2] {
			t.Fatalf("scrape %d: %d, body differs from scrape %d", i, codes[i], i%2)
		}
	}

	clk.Add(10 * time.Second)
	rec := do(t, e, "GET", nil)
	if rec.Header().Get("Age") != "10" || rec.Header().Get("Cache-Control") != "max-age=30" {
		t.Errorf("cached response: Age %q, Cache-Control %q", rec.Header().Get("Age"), rec.Header().Get("Cache-Control"))
	}
	if src.calls.Load() != 1 {
		t.Errorf("a fresh cache was refreshed")
	}
	clk.Add(20 * time.Second)
	rec = do(t, e, "GET", nil)
	if src.calls.Load() != 2 || rec.Header().Get("Age") != "0" {
		t.Errorf("after the TTL: %d calls, Age %q; want a refresh", src.calls.Load(), rec.Header().Get("Age"))
	}
}

// TestCacheRefreshOutlivesCaller: the scrape that started a shared refresh
// goes away; the refresh goes on for the others.
func TestCacheRefreshOutlivesCaller(t *testing.T) {
	src := &fakeSource{snap: smallSnapshot(), gate: make(chan struct{})}
	e := New(src, Options{CacheTTL: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil).WithContext(ctx))
		first <- rec.Code
	}()
	waitFor(t, func() bool { return src.calls.Load() == 1 })
	cancel()
	<-first
	second := make(chan *httptest.ResponseRecorder)
	go func() { second <- do(t, e, "GET", nil) }()
	time.Sleep(20 * time.Millisecond)
	close(src.gate)
	if rec := <-second; rec.Code != 200 {
		t.Errorf("second scrape: %d", rec.Code)
	}
	if src.calls.Load() != 1 || src.ctxErr.Load() != "" {
		t.Errorf("%d calls, refresh context error %q; want one uncancelled refresh", src.calls.Load(), src.ctxErr.Load())
	}
}

// TestCacheOff: TTL 0 reads a snapshot for every scrape.
func TestCacheOff(t *testing.T) {
	src := &fakeSource{snap: smallSnapshot()}
	e := New(src, Options{})
	for i := 0; i < 5; i++ {
		rec := do(t, e, "GET", nil)
		if rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("Age") != "" {
			t.Errorf("uncached response headers: %v", rec.Header())
		}
	}
	fetchStatus(t, e.ServiceStatus())
	if got := src.calls.Load(); got != 6 {
		t.Errorf("%d snapshot calls for 6 requests without cache", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}
