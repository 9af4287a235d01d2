package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/kiln-build/kiln/internal/cli"
	"github.com/kiln-build/kiln/internal/testdb"
	"github.com/kiln-build/kiln/internal/testpeers"
)

// TestReadmeReports runs the README's "Reports" section with the real
// binaries: its S3 example on PostgreSQL, against the test S3 server
// process and a real Pushgateway, next to servers that write the hourly
// report its config example sets up; then its file example on a SQLite
// farm laid out as the README's. Every report validates against
// docs/report.schema.json and has the figures of a scrape of the same
// farm; the push records the success, and a failed run its failure while
// keeping the last success.
func TestReadmeReports(t *testing.T) {
	blocks := readmeBlocks(t, "## Reports")
	var sh []string
	var toml string
	for _, b := range blocks {
		switch b.lang {
		case "sh":
			sh = append(sh, b.text)
		case "toml":
			toml = b.text
		}
	}
	if len(sh) != 2 || toml == "" {
		t.Fatalf("the Reports section should show a file example, an S3 example and a config file: %+v", blocks)
	}
	s3 := testpeers.StartS3(t, testpeers.S3Options{Buckets: []string{"kiln-reports"}})
	gw := testpeers.StartPushgateway(t)
	pg := testdb.Postgres(t)
	keys := "KILN_S3_ACCESS_KEY_ID=" + s3.Key.ID + " KILN_S3_SECRET_ACCESS_KEY=" + s3.Key.Secret
	sub := strings.NewReplacer("https://s3.eu-west-1.amazonaws.com", s3.Endpoint, "eu-west-1", s3.Region,
		"http://pushgateway:9091", gw.URL, "postgres://kiln@db.example.com/kiln", pg,
		"KILN_S3_ACCESS_KEY_ID=… KILN_S3_SECRET_ACCESS_KEY=…", keys)
	env := append(cleanEnv(t), "PATH="+filepath.Dir(kilnBin)+":"+os.Getenv("PATH"))
	state := filepath.Join(t.TempDir(), "exported")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}

	// A server with the README's schedule writes this hour's report at start.
	conf := filepath.Join(t.TempDir(), "kiln.toml")
	if err := os.WriteFile(conf, []byte(sub.Replace(toml)), 0o600); err != nil {
		t.Fatal(err)
	}
	const admin = "kiln_readme-reports-admin-token"
	srv := startServer(t, cleanEnv(t, "KILN_S3_ACCESS_KEY_ID="+s3.Key.ID, "KILN_S3_SECRET_ACCESS_KEY="+s3.Key.Secret,
		"KILN_BOOTSTRAP_TOKEN="+admin), "--config", conf, "--data-dir", t.TempDir(), "--database", pg,
		"--metrics-server", "127.0.0.1:0", "--metrics-cache-ttl", "0")
	metrics := internalMetricsURL(t, srv)
	waitUntil(t, "the server's scheduled report", func() bool {
		return slices.Contains(s3.Objects(t, "farm/"), "farm/latest.json")
	}, func() string { return srv.stderr.String() })
	validateReport(t, s3.Get(t, "farm/latest.json"))
	testpeers.CheckMetrics(t, testpeers.ScrapeText(t, metrics))
	if !strings.Contains(string(testpeers.ScrapeText(t, metrics)), `kiln_report_attempts_total{outcome="success"} 1`) {
		t.Errorf("the server does not count its report:\n%s", testpeers.ScrapeText(t, metrics))
	}

	// work finished in the window, for the statistics
	farmWork(t, srv.url, admin)
	before := time.Now()
	out := runShell(t, t.TempDir(), env, state, sub.Replace(sh[1]))
	after := time.Now()
	name := regexp.MustCompile(`report-\d{8}T\d{6}Z\.json`).FindString(out)
	if name == "" || !strings.Contains(out, "report written to "+s3.Endpoint+"/kiln-reports/farm/"+name) {
		t.Fatalf("the S3 example says:\n%s", out)
	}
	doc := s3.Get(t, "farm/"+name)
	if latest := s3.Get(t, "farm/latest.json"); !bytes.Equal(latest, doc) {
		t.Errorf("latest.json is not the last report")
	}
	validateReport(t, doc)
	sameFigures(t, doc, srv.url, 1)
	g := group(t, gw, "kiln_report", host)
	success, ok := value(t, g, "kiln_report_last_success_timestamp_seconds", nil)
	if !ok {
		t.Fatalf("no last success pushed: %v", g.Metrics)
	}
	inRange(t, "last success", success, before, after)
	if v, _ := value(t, g, "kiln_report_size_bytes", nil); v != float64(len(doc)) {
		t.Errorf("pushed size %v, the report has %d bytes", v, len(doc))
	}

	// a run that fails: the bucket does not exist
	time.Sleep(1100 * time.Millisecond) // timestamps a second apart
	before = time.Now()
	r := kilnTimeout(t, 60*time.Second, cleanEnv(t, "KILN_S3_ACCESS_KEY_ID="+s3.Key.ID, "KILN_S3_SECRET_ACCESS_KEY="+s3.Key.Secret),
		"report", "--database", pg, "--output", "s3://no-such-bucket/farm/?endpoint="+s3.Endpoint+"&region="+s3.Region,
		"--pushgateway", gw.URL)
	if r.code != 1 || !strings.Contains(r.stderr, `the report was not written: S3 `+s3.Endpoint+`/no-such-bucket/farm/: writing farm/report-`) ||
		!strings.Contains(r.stderr, `bucket "no-such-bucket" does not exist`) {
		t.Fatalf("kiln report to a missing bucket: %s", r)
	}
	g = group(t, gw, "kiln_report", host)
	if v, _ := value(t, g, "kiln_report_last_success_timestamp_seconds", nil); v != success {
		t.Errorf("after a failed run the last success is %v, want the previous %v", v, success)
	}
	failure, ok := value(t, g, "kiln_report_last_failure_timestamp_seconds", nil)
	if !ok {
		t.Fatal("the failed run pushed no failure timestamp")
	}
	inRange(t, "last failure", failure, before, time.Now())

	// The file example, on a SQLite farm in a directory laid out as the README's.
	dir := t.TempDir()
	local := startServer(t, cleanEnv(t, "KILN_BOOTSTRAP_TOKEN="+admin), "--data-dir", filepath.Join(dir, "kiln-data"),
		"--metrics-cache-ttl", "0")
	farmWork(t, local.url, admin)
	out = runShell(t, dir, env, state, sh[0])
	if !strings.Contains(out, "report written to kiln-data/report.json: ") || !strings.Contains(out, "1 runs of 1 tasks over 30 days") {
		t.Fatalf("the file example says:\n%s", out)
	}
	doc, err = os.ReadFile(filepath.Join(dir, "kiln-data", "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	validateReport(t, doc)
	sameFigures(t, doc, local.url, 1)
}

// farmWork gives a farm a scope, a public workspace and one work request,
// aborted: a finished run.
func farmWork(t *testing.T, url, admin string) {
	t.Helper()
	apiJSON(t, url, admin, "POST", "/api/1.0/scopes/", map[string]any{"name": "debian"}, 201)
	apiJSON(t, url, admin, "POST", "/api/1.0/workspaces/", map[string]any{"name": "main", "scope": "debian", "public": true}, 201)
	wr := apiJSON(t, url, admin, "POST", "/api/1.0/work-requests/", map[string]any{"task_type": "Worker", "task_name": "noop",
		"workspace": "debian/main", "task_data": map[string]any{"host_architecture": "amd64"}}, 201)
	apiJSON(t, url, admin, "POST", fmt.Sprintf("/api/1.0/work-requests/%v/abort/", wr["id"]), map[string]any{}, 200)
}

// internalMetricsURL is the …/metrics URL a server started with
// --metrics-server printed.
func internalMetricsURL(t *testing.T, srv *server) string {
	t.Helper()
	for _, line := range strings.Split(srv.stdout.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "Internal metrics on "); ok {
			u, _, _ := strings.Cut(rest, " ")
			return u
		}
	}
	t.Fatalf("no internal metrics address in:\n%s", srv.stdout)
	return ""
}

// validateReport checks a report against docs/report.schema.json.
func validateReport(t *testing.T, body []byte) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "docs", "report.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("report.schema.json", raw); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("report.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the report is not JSON: %v", err)
	}
	if err := sch.Validate(doc); err != nil {
		t.Fatalf("the report does not validate against docs/report.schema.json: %v", err)
	}
}

// sameFigures compares a report with a scrape of the farm's public
// endpoint taken now, the farm being still: every series of every family
// but tokens_last_seen, whose ages move with the clock. (That a report
// equals a scrape of the same snapshot to the last figure, that one too,
// is internal/report's test.) runs is the statistics' total.
func sameFigures(t *testing.T, body []byte, url string, runs int64) {
	t.Helper()
	var doc struct {
		Metrics map[string]struct {
			Series []struct {
				Labels  map[string]string `json:"labels"`
				Value   *float64          `json:"value"`
				Buckets []struct {
					Le    float64 `json:"le"`
					Count uint64  `json:"count"`
				} `json:"buckets"`
				Count *uint64  `json:"count"`
				Sum   *float64 `json:"sum"`
			} `json:"series"`
		} `json:"metrics"`
		Statistics struct {
			Total struct {
				Runs int64 `json:"runs"`
			} `json:"total"`
		} `json:"statistics"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Statistics.Total.Runs != runs {
		t.Errorf("the report counts %d runs, want %d", doc.Statistics.Total.Runs, runs)
	}
	resp, err := http.Get(url + "/api/1.0/open-metrics/")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	scraped, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	key := func(l map[string]string) string {
		var parts []string
		for k, v := range l {
			parts = append(parts, k+"="+v)
		}
		slices.Sort(parts)
		return strings.Join(parts, ",")
	}
	compared := 0
	for name, mf := range scraped {
		if name == "tokens_last_seen" {
			continue
		}
		want := map[string]string{}
		for _, m := range mf.Metric {
			l := map[string]string{}
			for _, lp := range m.Label {
				l[lp.GetName()] = lp.GetValue()
			}
			want[key(l)] = figures(m)
		}
		got := map[string]string{}
		for _, s := range doc.Metrics[name].Series {
			var b strings.Builder
			if s.Value != nil {
				fmt.Fprint(&b, *s.Value)
			} else if s.Count != nil && s.Sum != nil {
				for _, bk := range s.Buckets {
					fmt.Fprintf(&b, "%v:%d ", bk.Le, bk.Count)
				}
				fmt.Fprintf(&b, "+Inf:%d %d %v", *s.Count, *s.Count, *s.Sum)
			}
			got[key(s.Labels)] = b.String()
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s{%s}: the report has %q, a scrape %q", name, k, got[k], v)
			}
			compared++
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d series in the report, %d in a scrape", name, len(got), len(want))
		}
	}
	if compared < 6 {
		t.Errorf("only %d series compared:\n%s", compared, text)
	}
}

func figures(m *dto.Metric) string {
	if m.Gauge != nil {
		return fmt.Sprint(m.GetGauge().GetValue())
	}
	h := m.GetHistogram()
	var b strings.Builder
	for _, bk := range h.Bucket {
		fmt.Fprintf(&b, "%v:%d ", bk.GetUpperBound(), bk.GetCumulativeCount())
	}
	fmt.Fprintf(&b, "%d %v", h.GetSampleCount(), h.GetSampleSum())
	return b.String()
}

// TestReportOutputOnlyFromTheCommandLine: KILN_OUTPUT is the admin
// commands' output format, never a report's file; kiln report's other
// flags come from the environment as every command's do.
func TestReportOutputOnlyFromTheCommandLine(t *testing.T) {
	t.Setenv("KILN_OUTPUT", "json")
	var out, errb bytes.Buffer
	if code := cli.Main(context.Background(), []string{"report", "--data-dir", t.TempDir()}, &out, &errb); code != cli.ExitUsage ||
		!strings.Contains(errb.String(), "--output: required") {
		t.Fatalf("kiln report with KILN_OUTPUT=json: exit %d: %s", code, errb.String())
	}
	t.Setenv("KILN_WINDOW", "0d")
	errb.Reset()
	if code := cli.Main(context.Background(), []string{"report", "--output", filepath.Join(t.TempDir(), "r.json")}, &out, &errb); code != cli.ExitUsage ||
		!strings.Contains(errb.String(), "--window: window must be a number of days from 1d to 366d") {
		t.Fatalf("kiln report with KILN_WINDOW=0d: exit %d: %s", code, errb.String())
	}
}
