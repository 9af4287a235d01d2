package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kiln-build/kiln/internal/testpeers"
)

// TestPrometheusScrapesOpenMetrics has the real Prometheus scrape the
// public endpoint of a running server (OpenMetrics, as Prometheus asks for
// it first) and checks through Prometheus' HTTP API that a PromQL query
// returns the figures kiln holds, before and after they change.
func TestPrometheusScrapesOpenMetrics(t *testing.T) {
	const token = "kiln_prometheus_e2e_token"
	srv := start(t, Config{BootstrapToken: token, MetricsCacheTTL: 0})
	post := func(path, body string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.API+"/api/1.0/"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Token "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b.String())
		}
	}
	post("scopes/", `{"name": "debian"}`)
	post("workspaces/", `{"name": "main", "scope": "debian", "public": true}`)
	submit := func(n int) {
		for i := 0; i < n; i++ {
			post("work-requests/", `{"task_type": "Worker", "task_name": "noop", "workspace": "debian/main",
				"task_data": {"host_architecture": "riscv64", "backend": "unshare"}}`)
		}
	}
	submit(3)

	u, _ := url.Parse(srv.API)
	prom := testpeers.StartPrometheus(t, testpeers.ScrapeJob{Name: "kiln", Target: u.Host, MetricsPath: "/api/1.0/open-metrics/"})
	const q = `work_requests{job="kiln",task_type="Worker",task_name="noop",status="pending",scope="debian",host_architecture="riscv64",backend="unshare"}`
	for _, want := range []float64{3, 5} {
		if want == 5 {
			submit(2)
		}
		// what kiln itself says
		_, body := get(t, srv.API+"/api/1.0/open-metrics/", "")
		parser := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		held := -1.0
		for _, m := range fams["work_requests"].GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["status"] == "pending" && labels["host_architecture"] == "riscv64" {
				held = m.GetGauge().GetValue()
			}
		}
		if held != want {
			t.Fatalf("kiln reports %v pending riscv64 requests, want %v", held, want)
		}
		got := prom.Eventually(t, q, 30*time.Second, func(s []testpeers.Sample) bool { return len(s) == 1 && s[0].Value == held })
		if got[0].Labels["__name__"] != "work_requests" {
			t.Fatalf("unexpected series %v", got[0].Labels)
		}
	}
	// the scrape was OpenMetrics and healthy
	targets := prom.Targets(t)
	var tg struct {
		Data struct {
			ActiveTargets []struct {
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(targets), &tg); err != nil || len(tg.Data.ActiveTargets) != 1 || tg.Data.ActiveTargets[0].Health != "up" {
		t.Fatalf("target not healthy: %s", targets)
	}
	// histograms arrive as histograms: _count of a family with no data yet
	// is absent, but user_activity's buckets exist only with workflows;
	// file_store_size is always there
	prom.Eventually(t, `file_store_size{job="kiln",name="default",backend="Local"}`, 10*time.Second, func(s []testpeers.Sample) bool { return len(s) == 1 })
}
