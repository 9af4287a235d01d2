package telemetry_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/kiln-build/kiln/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

// The runner (docs/architecture.md#runner-metrics): parse --metrics-server at start-up, bind it before
// doing anything else so a busy port fails early, and serve until shutdown.
func ExampleServe() {
	addr, err := telemetry.ParseListenAddress("127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	reg := telemetry.NewRegistry()
	if err := telemetry.RegisterBuildInfo(reg, telemetry.ReadBuildInfo()); err != nil {
		fmt.Println(err)
		return
	}
	logger := slog.New(slog.DiscardHandler) // the process's logger

	srv, err := telemetry.Listen(addr, telemetry.NewInternalMux(reg, telemetry.WithMuxLogger(logger)), logger)
	if err != nil {
		fmt.Println(err) // e.g. the port is taken: exit non-zero
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()

	resp, err := http.Get("http://" + srv.Addr().String() + "/metrics")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, strings.Contains(string(body), "kiln_build_info{"))

	cancel() // on SIGTERM
	fmt.Println(<-done)
	// Output:
	// 200 true
	// <nil>
}

// The API server (docs/architecture.md#server-instrumentation): routes are instrumented by pattern, health probes
// opt out, and CountUnmatched catches what matches no route.
func ExampleHTTPMetrics() {
	reg := prometheus.NewRegistry()
	m, err := telemetry.NewHTTPMetrics(reg, "kiln", "http")
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	m.Handle(mux, "GET /api/1.0/work-requests/{id}/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "work request %s", r.PathValue("id"))
	}))
	m.HandleUninstrumented(mux, "GET /-/healthy", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	handler := m.CountUnmatched(mux)

	for _, path := range []string{"/api/1.0/work-requests/1/", "/api/1.0/work-requests/2/", "/-/healthy", "/wp-login.php"} {
		handler.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	out, _ := testutil.GatherAndFormat(reg, expfmt.TypeTextPlain, "kiln_http_requests_total")
	fmt.Print(string(out))
	// Output:
	// # HELP kiln_http_requests_total HTTP requests answered, by method, route pattern and status code.
	// # TYPE kiln_http_requests_total counter
	// kiln_http_requests_total{code="200",method="get",route="GET /api/1.0/work-requests/{id}/"} 2
	// kiln_http_requests_total{code="404",method="get",route="unmatched"} 1
}

// A runner counting its calls to the server by outcome.
func ExampleOutgoingMetrics_RoundTripper() {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/1.0/workers/heartbeat/" {
			http.NotFound(w, r)
		}
	}))
	defer server.Close()

	reg := prometheus.NewRegistry()
	m, err := telemetry.NewOutgoingMetrics(reg, "kiln")
	if err != nil {
		fmt.Println(err)
		return
	}
	client := &http.Client{Transport: m.RoundTripper("server", nil)}
	for _, path := range []string{"/api/1.0/workers/heartbeat/", "/api/1.0/nope/"} {
		if resp, err := client.Get(server.URL + path); err == nil {
			resp.Body.Close()
		}
	}
	out, _ := testutil.GatherAndFormat(reg, expfmt.TypeTextPlain, "kiln_outgoing_requests_total")
	fmt.Print(string(out))
	// Output:
	// # HELP kiln_outgoing_requests_total HTTP requests made to other services, by target service and outcome.
	// # TYPE kiln_outgoing_requests_total counter
	// kiln_outgoing_requests_total{outcome="error",service="server"} 0
	// kiln_outgoing_requests_total{outcome="http_4xx",service="server"} 1
	// kiln_outgoing_requests_total{outcome="http_5xx",service="server"} 0
	// kiln_outgoing_requests_total{outcome="success",service="server"} 1
}

// A webhook endpoint counting what it receives.
func ExampleEventMetrics_Observe() {
	reg := prometheus.NewRegistry()
	m, err := telemetry.NewEventMetrics(reg, "kiln")
	if err != nil {
		fmt.Println(err)
		return
	}
	m.Observe("github", "push", telemetry.EventProcessed)
	m.Observe("github", "ping", telemetry.EventIgnored)
	out, _ := testutil.GatherAndFormat(reg, expfmt.TypeTextPlain, "kiln_incoming_events_total")
	fmt.Print(string(out))
	// Output:
	// # HELP kiln_incoming_events_total Incoming events (webhooks) handled, by source, event type and outcome.
	// # TYPE kiln_incoming_events_total counter
	// kiln_incoming_events_total{outcome="ignored",source="github",type="ping"} 1
	// kiln_incoming_events_total{outcome="processed",source="github",type="push"} 1
}

func ExampleRegisterBuildInfo() {
	reg := prometheus.NewRegistry()
	bi := telemetry.BuildInfo{Version: "1.2.3", Revision: "abc1234", Branch: "main",
		GoVersion: "go1.26.8", OS: "linux", Architecture: "arm64", BuiltAt: "2026-11-21T10:00:00Z"}
	if err := telemetry.RegisterBuildInfo(reg, bi); err != nil {
		fmt.Println(err)
		return
	}
	out, _ := testutil.GatherAndFormat(reg, expfmt.TypeTextPlain, "kiln_build_info")
	fmt.Print(string(out))
	// Output:
	// # HELP kiln_build_info Build information of this kiln process (server or runner: the same binary); always 1.
	// # TYPE kiln_build_info gauge
	// kiln_build_info{architecture="arm64",branch="main",built_at="2026-11-21T10:00:00Z",go_version="go1.26.8",os="linux",revision="abc1234",version="1.2.3"} 1
}

func ExampleNewRegistry() {
	reg := telemetry.NewRegistry()
	n, _ := testutil.GatherAndCount(reg, "go_goroutines", "process_start_time_seconds", "go_memstats_alloc_bytes")
	fmt.Println(n)
	// Output:
	// 3
}
