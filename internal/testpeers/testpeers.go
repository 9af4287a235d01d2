// Package testpeers starts the real Prometheus and Pushgateway (Debian
// packages prometheus and prometheus-pushgateway) on loopback for tests, so
// that what kiln exposes or pushes is checked by the programs operators
// actually run. Every process is stopped when the test ends. Where a binary
// is missing the test fails under CI (which installs them, see .ci/run) and
// is skipped elsewhere with a message saying how to install it.
package testpeers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kiln-build/kiln/internal/testkit"
)

// need returns the path of a binary or ends the test.
func need(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s is not installed (apt-get install %s; .ci/run does it)", name, pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// freePort reserves a loopback port for a child process.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects output written from several goroutines.
type lockedBuffer = testkit.Buffer

// startProcess runs a child until the test ends and waits until url
// answers 200.
func startProcess(t testing.TB, ready string, name string, args ...string) *lockedBuffer {
	t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return out
			}
		}
		select {
		case <-done:
			t.Fatalf("%s exited before it was ready:\n%s", filepath.Base(name), out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 30s:\n%s", filepath.Base(name), out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Prometheus is a running Prometheus server.
type Prometheus struct {
	URL string
	out *lockedBuffer
}

// ScrapeJob is one scrape target of the test Prometheus.
type ScrapeJob struct {
	Name        string
	Target      string // host:port
	MetricsPath string
	HonorLabels bool
}

// StartPrometheus starts Prometheus on loopback scraping the jobs every
// second.
func StartPrometheus(t testing.TB, jobs ...ScrapeJob) *Prometheus {
	t.Helper()
	return StartPrometheusWithRules(t, nil, jobs...)
}

// StartPrometheusWithRules starts Prometheus on loopback scraping the jobs
// every second and evaluating the rule files (absolute paths) every
// second.
func StartPrometheusWithRules(t testing.TB, ruleFiles []string, jobs ...ScrapeJob) *Prometheus {
	t.Helper()
	bin := need(t, "prometheus", "prometheus")
	dir := t.TempDir()
	var cfg bytes.Buffer
	cfg.WriteString("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n")
	if len(ruleFiles) > 0 {
		cfg.WriteString("rule_files:\n")
		for _, f := range ruleFiles {
			fmt.Fprintf(&cfg, "  - %q\n", f)
		}
	}
	cfg.WriteString("scrape_configs:\n")
	for _, j := range jobs {
		fmt.Fprintf(&cfg, "  - job_name: %q\n    metrics_path: %q\n    honor_labels: %t\n    static_configs:\n      - targets: [%q]\n",
			j.Name, j.MetricsPath, j.HonorLabels, j.Target)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	out := startProcess(t, base+"/-/ready", bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(port),
		"--web.console.templates=/etc/prometheus/consoles",
		"--web.console.libraries=/etc/prometheus/console_libraries")
	return &Prometheus{URL: base, out: out}
}

// Sample is one result of an instant query.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Query runs an instant PromQL query.
func (p *Prometheus) Query(t testing.TB, q string) []Sample {
	t.Helper()
	resp, err := http.Get(p.URL + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.Status != "success" {
		t.Fatalf("query %q: %s", q, body.Error)
	}
	var out []Sample
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("query %q: value %v", q, r.Value[1])
		}
		out = append(out, Sample{Labels: r.Metric, Value: v})
	}
	return out
}

// Eventually polls q until check accepts its result, for up to timeout.
func (p *Prometheus) Eventually(t testing.TB, q string, timeout time.Duration, check func([]Sample) bool) []Sample {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := p.Query(t, q)
		if check(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("query %q never matched; last result %v\nprometheus log:\n%s", q, got, p.out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// RuleState is the state of one rule as Prometheus' /api/v1/rules shows
// it.
type RuleState struct {
	Group, Name, Type, Health, LastError string
	Evaluated                            bool // evaluated at least once
}

// Rules returns the state of every loaded rule.
func (p *Prometheus) Rules(t testing.TB) []RuleState {
	t.Helper()
	resp, err := http.Get(p.URL + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name           string    `json:"name"`
					Type           string    `json:"type"`
					Health         string    `json:"health"`
					LastError      string    `json:"lastError"`
					LastEvaluation time.Time `json:"lastEvaluation"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	var out []RuleState
	for _, g := range body.Data.Groups {
		for _, r := range g.Rules {
			out = append(out, RuleState{Group: g.Name, Name: r.Name, Type: r.Type, Health: r.Health, LastError: r.LastError,
				Evaluated: r.LastEvaluation.Year() > 2000})
		}
	}
	return out
}

// Targets returns the health of every scrape target ("up", "down") with
// its last error, for failure messages.
func (p *Prometheus) Targets(t testing.TB) string {
	resp, err := http.Get(p.URL + "/api/v1/targets")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String()
}

// Pushgateway is a running Pushgateway.
type Pushgateway struct {
	URL string
	out *lockedBuffer
}

// StartPushgateway starts a Pushgateway on loopback.
func StartPushgateway(t testing.TB) *Pushgateway {
	t.Helper()
	bin := need(t, "prometheus-pushgateway", "prometheus-pushgateway")
	port := freePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	out := startProcess(t, base+"/-/ready", bin, "--web.listen-address=127.0.0.1:"+strconv.Itoa(port))
	return &Pushgateway{URL: base, out: out}
}

// Group is one metric group held by the Pushgateway: its grouping labels
// and, per metric name, the sample values by their label sets.
type Group struct {
	Labels  map[string]string
	Metrics map[string][]Sample
}

// Groups reads every group through the Pushgateway's API (/api/v1/metrics).
func (g *Pushgateway) Groups(t testing.TB) []Group {
	t.Helper()
	resp, err := http.Get(g.URL + "/api/v1/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data []map[string]json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	var out []Group
	for _, raw := range body.Data {
		grp := Group{Labels: map[string]string{}, Metrics: map[string][]Sample{}}
		for k, v := range raw {
			if k == "labels" {
				json.Unmarshal(v, &grp.Labels)
				continue
			}
			var fam struct {
				Metrics []struct {
					Labels map[string]string `json:"labels"`
					Value  string            `json:"value"`
				} `json:"metrics"`
			}
			if json.Unmarshal(v, &fam) != nil {
				continue
			}
			for _, m := range fam.Metrics {
				f, err := strconv.ParseFloat(m.Value, 64)
				if err != nil {
					continue // histograms and summaries carry no single value
				}
				grp.Metrics[k] = append(grp.Metrics[k], Sample{Labels: m.Labels, Value: f})
			}
		}
		out = append(out, grp)
	}
	return out
}

// Families returns, family by family, the label sets of the series the
// Pushgateway exposes on its own /metrics (the text format, as Prometheus
// would scrape it) for the group {job, instance}: exactly what reached
// the gateway from that group, histograms and summaries included, which
// the JSON API of Groups shows only in part. A histogram's family is
// listed once, under its own name.
func (g *Pushgateway) Families(t testing.TB, job, instance string) map[string][]map[string]string {
	t.Helper()
	body := ScrapeText(t, g.URL+"/metrics")
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the Pushgateway's /metrics: %v", err)
	}
	out := map[string][]map[string]string{}
	for name, mf := range fams {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["job"] == job && labels["instance"] == instance {
				out[name] = append(out[name], labels)
			}
		}
	}
	return out
}

// CheckMetrics lints an exposition in the Prometheus text format 0.0.4
// with `promtool check metrics` (Debian package prometheus), which exits 0
// when clean, 3 on lint findings and 1 on a parse error. Any finding fails
// the test, with promtool's output.
func CheckMetrics(t testing.TB, exposition []byte) {
	t.Helper()
	bin := need(t, "promtool", "prometheus")
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// ScrapeText fetches url (a /metrics endpoint) asking for the text format
// 0.0.4, the only one promtool reads, and returns the body.
func ScrapeText(t testing.TB, url string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b.String())
	}
	return b.Bytes()
}
