package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kiln-build/kiln/internal/testpeers"
)

// request makes one HTTP request with optional headers and returns the
// status and body.
func request(t *testing.T, method, url string, header map[string]string, body string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
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
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// asAdmin returns the headers of an authenticated JSON request.
func asAdmin(token string) map[string]string {
	return map[string]string{"Authorization": "Token " + token, "Content-Type": "application/json"}
}

// mustPost posts body as token and wants 201; it returns the decoded id.
func mustPost(t *testing.T, url, token, body string) int64 {
	t.Helper()
	code, out := request(t, http.MethodPost, url, asAdmin(token), body)
	if code != http.StatusCreated {
		t.Fatalf("POST %s: %d %s", url, code, out)
	}
	var o struct {
		ID int64 `json:"id"`
	}
	json.Unmarshal([]byte(out), &o)
	return o.ID
}

// scrape reads the internal /metrics in the text format and parses it.
func scrape(t *testing.T, metricsURL string) map[string]*familyView {
	t.Helper()
	text := testpeers.ScrapeText(t, metricsURL+"/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	out := map[string]*familyView{}
	for name, mf := range fams {
		fv := &familyView{series: map[string]float64{}}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			fv.series[strings.Join(labels, ",")] = v
		}
		out[name] = fv
	}
	return out
}

// familyView is one family of a scrape: value by "k=v,k=v" label string
// (histograms: their count).
type familyView struct{ series map[string]float64 }

func (f *familyView) get(labels string) (float64, bool) {
	if f == nil {
		return 0, false
	}
	v, ok := f.series[labels]
	return v, ok
}

// TestInternalEndpointsOnlyOnInternalListener: /metrics and pprof answer
// on the --metrics-server listener and are 404 on the public API port,
// whatever the method.
func TestInternalEndpointsOnlyOnInternalListener(t *testing.T) {
	r := start(t, Config{MetricsServer: "127.0.0.1:0"})
	for _, path := range []string{"/metrics", "/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap",
		"/debug/pprof/goroutine?debug=1", "/debug/pprof/symbol"} {
		if code, _ := request(t, http.MethodGet, r.API+path, nil, ""); code != http.StatusNotFound {
			t.Errorf("GET %s on the API port = %d, want 404", path, code)
		}
		if code, _ := request(t, http.MethodGet, r.Metrics+path, nil, ""); code != http.StatusOK {
			t.Errorf("GET %s on the internal listener = %d, want 200", path, code)
		}
	}
	for _, path := range []string{"/metrics", "/debug/pprof/symbol"} {
		if code, _ := request(t, http.MethodPost, r.API+path, nil, ""); code != http.StatusNotFound {
			t.Errorf("POST %s on the API port = %d, want 404", path, code)
		}
	}
	if code, _ := request(t, http.MethodPost, r.Metrics+"/metrics", nil, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics on the internal listener = %d, want 405", code)
	}
	// Off by default: without --metrics-server there is no internal listener.
	plain := start(t, Config{})
	if plain.Metrics != "" {
		t.Errorf("an internal listener without --metrics-server: %s", plain.Metrics)
	}
	if code, _ := request(t, http.MethodGet, plain.API+"/metrics", nil, ""); code != http.StatusNotFound {
		t.Errorf("GET /metrics on the API port without --metrics-server = %d, want 404", code)
	}
}

// TestRoutePatternLabels goes through the real server: requests for
// /work-requests/1/ and /2/ make one series labelled by the route pattern,
// and a flood of 404s on random paths adds no series after the first.
func TestRoutePatternLabels(t *testing.T) {
	const token = "kiln_route_labels_test_token"
	r := start(t, Config{MetricsServer: "127.0.0.1:0", BootstrapToken: token})
	mustPost(t, r.API+"/api/1.0/scopes/", token, `{"name": "debian"}`)
	mustPost(t, r.API+"/api/1.0/workspaces/", token, `{"name": "main", "scope": "debian", "public": true}`)
	var ids []int64
	for range 2 {
		ids = append(ids, mustPost(t, r.API+"/api/1.0/work-requests/", token,
			`{"task_type": "Worker", "task_name": "noop", "workspace": "debian/main", "task_data": {"host_architecture": "riscv64"}}`))
	}
	for _, id := range ids {
		if code, body := request(t, http.MethodGet, fmt.Sprintf("%s/api/1.0/work-requests/%d/", r.API, id), asAdmin(token), ""); code != 200 {
			t.Fatalf("GET work request %d: %d %s", id, code, body)
		}
	}
	fams := scrape(t, r.Metrics)
	reqs := fams["kiln_http_requests_total"]
	const item = "code=200,method=get,route=GET /api/1.0/work-requests/{id}/{$}"
	if v, ok := reqs.get(item); !ok || v != 2 {
		t.Errorf("requests for /1/ and /2/: %v (present %v), want one series of 2; series:\n%v", v, ok, reqs.series)
	}
	for labels := range reqs.series {
		if strings.Contains(labels, "/1/") || strings.Contains(labels, "/2/") {
			t.Errorf("a series labelled by raw path: %s", labels)
		}
	}
	if _, ok := fams["kiln_http_request_duration_seconds"].get(item); !ok {
		t.Error("no duration series for the work request route")
	}

	flood := func(round int) {
		for i := range 100 {
			for _, p := range []string{
				fmt.Sprintf("/random-%d-%d", round, i),
				fmt.Sprintf("/api/1.0/nothing-%d-%d/", round, i),
				fmt.Sprintf("/api/1.0/work-requests/%d/x/%d", i, round),
				fmt.Sprintf("/.env.%d.%d", round, i),
			} {
				if code, _ := request(t, http.MethodGet, r.API+p, nil, ""); code != 404 {
					t.Fatalf("GET %s = %d, want 404", p, code)
				}
			}
		}
	}
	count := func() int {
		f := scrape(t, r.Metrics)
		return len(f["kiln_http_requests_total"].series) + len(f["kiln_http_request_duration_seconds"].series)
	}
	before := count()
	flood(1)
	afterFirst := count()
	if afterFirst-before > 4 {
		t.Errorf("400 requests for random paths added %d series; want the unmatched and catch-all ones only", afterFirst-before)
	}
	flood(2)
	if after := count(); after != afterFirst {
		t.Errorf("a second flood of 404s changed the series count from %d to %d", afterFirst, after)
	}
	fams = scrape(t, r.Metrics)
	if v, _ := fams["kiln_http_requests_total"].get("code=404,method=get,route=unmatched"); v != 400 {
		t.Errorf("unmatched 404s counted %v, want 400", v)
	}
	if v, _ := fams["kiln_http_requests_total"].get("code=404,method=get,route=/api/1.0/"); v != 400 {
		t.Errorf("404s under /api/1.0/ counted %v, want 400", v)
	}
}

// TestServerMetricsPromtool: the internal /metrics of a server that served
// API requests, webhooks and notifications passes `promtool check
// metrics`, and carries every family docs/architecture.md#server-instrumentation asks for.
func TestServerMetricsPromtool(t *testing.T) {
	const token = "kiln_promtool_test_admin_token"
	receiver := newReceiver(t, http.StatusOK)
	reportFile := filepath.Join(t.TempDir(), "farm.json")
	r := start(t, Config{MetricsServer: "127.0.0.1:0", BootstrapToken: token, NotifyURLs: []string{receiver.url},
		DataDir: filepath.Join(t.TempDir(), "data"), ReportInterval: time.Hour, ReportTarget: reportFile})
	mustPost(t, r.API+"/api/1.0/scopes/", token, `{"name": "debian"}`)
	mustPost(t, r.API+"/api/1.0/workspaces/", token, `{"name": "main", "scope": "debian", "public": true}`)
	id := mustPost(t, r.API+"/api/1.0/work-requests/", token,
		`{"task_type": "Worker", "task_name": "noop", "workspace": "debian/main", "task_data": {"host_architecture": "riscv64"}}`)
	request(t, http.MethodPost, fmt.Sprintf("%s/api/1.0/work-requests/%d/abort/", r.API, id), asAdmin(token), `{}`)
	receiver.wait(t, 1)
	h := asAdmin(token)
	h["X-Kiln-Event"] = "push"
	request(t, http.MethodPost, r.API+"/api/1.0/hooks/kiln/", h,
		`{"work_request": {"task_type": "Worker", "task_name": "noop", "workspace": "debian/main", "task_data": {"host_architecture": "riscv64"}}}`)
	request(t, http.MethodGet, r.API+"/nowhere", nil, "")

	// the hour's report, written at start
	waitFor(t, 20*time.Second, "the scheduled report", func() bool {
		f := scrape(t, r.Metrics)["kiln_report_attempts_total"]
		v, _ := f.get("outcome=success")
		return v == 1
	})
	if _, err := os.Stat(reportFile); err != nil {
		t.Errorf("the scheduled report: %v", err)
	}

	testpeers.CheckMetrics(t, testpeers.ScrapeText(t, r.Metrics+"/metrics"))
	fams := scrape(t, r.Metrics)
	for _, name := range []string{
		"kiln_http_requests_total", "kiln_http_request_duration_seconds", "kiln_http_requests_in_flight",
		"kiln_build_info", "go_goroutines", "process_cpu_seconds_total", "process_resident_memory_bytes",
		"go_sql_open_connections", "go_sql_max_open_connections", "go_sql_wait_count_total",
		"kiln_scheduler_queue_wait_seconds", "kiln_scheduler_assignments_total", "kiln_scheduler_requeued_total",
		"kiln_outgoing_requests_total", "kiln_outgoing_request_duration_seconds", "kiln_incoming_events_total",
		"kiln_notify_queue_length", "kiln_notify_dropped_total", "kiln_server_errors_total", "kiln_http_panics_total",
		"go_memstats_alloc_bytes", "go_gc_duration_seconds",
		"kiln_totals_folded_entries_total", "kiln_totals_fold_errors_total", "kiln_totals_fold_duration_seconds",
		"kiln_report_attempts_total", "kiln_report_attempt_duration_seconds", "kiln_report_last_success_timestamp_seconds", "kiln_report_interval_seconds",
		"kiln_signals_published_total", "kiln_signals_received_total", "kiln_signals_dropped_total", "kiln_signals_listening",
		"kiln_live_log_received_bytes_total", "kiln_live_log_swept_chunks_total",
	} {
		if fams[name] == nil {
			t.Errorf("internal /metrics lacks %s", name)
		}
	}
	if v, _ := fams["kiln_outgoing_requests_total"].get("outcome=success,service=notify"); v != 1 {
		t.Errorf("notifications counted %v, want 1", v)
	}
	if v, _ := fams["kiln_incoming_events_total"].get("outcome=processed,source=kiln,type=push"); v != 1 {
		t.Errorf("webhook events counted %v, want 1", v)
	}
	if _, ok := fams["go_sql_open_connections"].get("db_name=kiln"); !ok {
		t.Errorf("database pool statistics without db_name=kiln: %v", fams["go_sql_open_connections"].series)
	}
	for labels := range fams["kiln_build_info"].series {
		for _, l := range strings.Split(labels, ",") {
			if k, v, _ := strings.Cut(l, "="); v == "" {
				t.Errorf("kiln_build_info has an empty %s", k)
			}
		}
	}
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRequestMetricsConfigured: the duration buckets and the routes left
// out of the request metrics are the server's settings; the default
// buckets reach past 10 s for artifact transfers.
func TestRequestMetricsConfigured(t *testing.T) {
	const openMetrics = "GET /api/1.0/open-metrics/{$}"
	bucketsOf := func(metricsURL string) []string {
		text := string(testpeers.ScrapeText(t, metricsURL+"/metrics"))
		var les []string
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, "kiln_http_request_duration_seconds_bucket{") && strings.Contains(line, `route="GET /api/1.0/scopes/{$}"`) {
				_, le, _ := strings.Cut(line, `le="`)
				le, _, _ = strings.Cut(le, `"`)
				les = append(les, le)
			}
		}
		return les
	}

	def := start(t, Config{MetricsServer: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), "data")})
	request(t, http.MethodGet, def.API+"/api/1.0/scopes/", nil, "")
	if got := strings.Join(bucketsOf(def.Metrics), ","); got != "0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,120,300,+Inf" {
		t.Errorf("default buckets %s", got)
	}

	r := start(t, Config{MetricsServer: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), "data"),
		HTTPDurationBuckets: []float64{0.5, 600}, HTTPExcludeRoutes: []string{openMetrics}})
	request(t, http.MethodGet, r.API+"/api/1.0/scopes/", nil, "")
	if code, _ := request(t, http.MethodGet, r.API+"/api/1.0/open-metrics/", nil, ""); code != 200 {
		t.Fatalf("the excluded route does not answer: %d", code)
	}
	if got := strings.Join(bucketsOf(r.Metrics), ","); got != "0.5,600,+Inf" {
		t.Errorf("configured buckets %s, want 0.5,600,+Inf", got)
	}
	fams := scrape(t, r.Metrics)
	for labels := range fams["kiln_http_requests_total"].series {
		if strings.Contains(labels, "open-metrics") {
			t.Errorf("the excluded route is counted: %s", labels)
		}
	}
	for labels := range fams["kiln_http_panics_total"].series {
		if strings.Contains(labels, "open-metrics") {
			t.Errorf("the excluded route has a panics series: %s", labels)
		}
	}
	if _, ok := fams["kiln_http_panics_total"].get("route=GET /api/1.0/scopes/{$}"); !ok {
		t.Errorf("no panics_total series at 0 for an instrumented route: %v", fams["kiln_http_panics_total"])
	}
}
