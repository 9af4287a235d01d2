// Package monitoring_test checks the monitoring bundle kiln ships: the
// Prometheus rules (*.rules.yml, each with its promtool unit tests in
// *.rules.test.yml) and the Grafana dashboards (grafana-*.json). They are
// part of the product: these tests keep them valid, tested and in step with
// what kiln exposes, and e2e_test.go loads all of them into a real
// Prometheus scraping a real farm.
package monitoring_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is required in CI (Debian package prometheus)")
		}
		t.Skip("promtool not installed (apt-get install prometheus); CI runs this check")
	}
	return path
}

// files returns the bundle's files matching pattern, sorted.
func files(t *testing.T, pattern string) []string {
	t.Helper()
	out, err := filepath.Glob(pattern)
	if err != nil || len(out) == 0 {
		t.Fatalf("no %s in monitoring/ (%v)", pattern, err)
	}
	slices.Sort(out)
	return out
}

// ruleFiles are the shipped rule files, their tests left out.
func ruleFiles(t *testing.T) []string {
	var out []string
	for _, f := range files(t, "*.rules.yml") {
		if !strings.HasSuffix(f, ".test.yml") {
			out = append(out, f)
		}
	}
	return out
}

// rule is one recording or alerting rule.
type rule struct {
	Record string `yaml:"record"`
	Alert  string `yaml:"alert"`
	Expr   string `yaml:"expr"`
}

func loadRules(t *testing.T, file string) []rule {
	t.Helper()
	body, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(body, &doc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var out []rule
	for _, g := range doc.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatalf("%s has no rules", file)
	}
	return out
}

// ruleTests is what a promtool test file exercises.
type ruleTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Alerts []struct {
			Name      string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		Exprs []struct {
			Expr       string `yaml:"expr"`
			ExpSamples []any  `yaml:"exp_samples"`
		} `yaml:"promql_expr_test"`
	} `yaml:"tests"`
}

// TestRulesAreUnitTested: every rule file passes `promtool check rules`
// and has a test file that passes `promtool test rules`, in which every
// alert fires at least once (and so is tested with its labels and
// annotations) and every recording rule's result is checked.
func TestRulesAreUnitTested(t *testing.T) {
	bin := promtool(t)
	for _, file := range ruleFiles(t) {
		t.Run(file, func(t *testing.T) {
			if out, err := exec.Command(bin, "check", "rules", file).CombinedOutput(); err != nil {
				t.Errorf("promtool check rules %s: %v\n%s", file, err, out)
			}
			testFile := strings.TrimSuffix(file, ".yml") + ".test.yml"
			if out, err := exec.Command(bin, "test", "rules", testFile).CombinedOutput(); err != nil {
				t.Fatalf("promtool test rules %s: %v\n%s", testFile, err, out)
			}
			body, err := os.ReadFile(testFile)
			if err != nil {
				t.Fatal(err)
			}
			var tests ruleTests
			if err := yaml.Unmarshal(body, &tests); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(tests.RuleFiles, []string{file}) {
				t.Errorf("%s tests %v, want exactly %s", testFile, tests.RuleFiles, file)
			}
			fired, checked := map[string]bool{}, map[string]bool{}
			for _, tc := range tests.Tests {
				for _, a := range tc.Alerts {
					if len(a.ExpAlerts) > 0 {
						fired[a.Name] = true
					}
				}
				for _, e := range tc.Exprs {
					if len(e.ExpSamples) > 0 {
						for _, name := range metricNames(e.Expr) {
							checked[name] = true
						}
					}
				}
			}
			for _, r := range loadRules(t, file) {
				switch {
				case r.Alert != "" && !fired[r.Alert]:
					t.Errorf("alert %s never fires in %s: test its labels and annotations", r.Alert, testFile)
				case r.Record != "" && !checked[r.Record]:
					t.Errorf("recording rule %s is never checked by a promql_expr_test of %s", r.Record, testFile)
				}
			}
		})
	}
}

// publicNames are the metric names of the public endpoint's golden
// exposition, with the sample suffixes of histograms.
func publicNames(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "internal", "openmetrics", "testdata", "metrics.text.golden"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{"up": true} // Prometheus' own series of every scrape
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 4 && fields[0] == "#" && fields[1] == "TYPE" {
			names[fields[2]] = true
			if fields[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[fields[2]+s] = true
				}
			}
		}
	}
	for _, r := range loadRules(t, "kiln.rules.yml") {
		if r.Record != "" {
			names[r.Record] = true
		}
	}
	return names
}

var (
	// a metric name in PromQL: an identifier followed by a selector or
	// standing alone, and not a function, keyword or label
	namePattern = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlWords = map[string]bool{"sum": true, "by": true, "on": true, "and": true, "or": true, "unless": true, "vector": true,
		"clamp_min": true, "histogram_quantile": true, "without": true, "ignoring": true, "le": true, "max": true, "min": true,
		"count": true, "offset": true, "group_left": true, "group_right": true, "time": true}
	durationPattern = regexp.MustCompile(`^[0-9]+[smhdwy]$`)
)

// metricNames lists the metric names an expression selects.
func metricNames(expr string) []string {
	// drop label matchers, strings and range durations: they hold label
	// names and values
	expr = regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(expr, "{}")
	expr = regexp.MustCompile(`"[^"]*"`).ReplaceAllString(expr, `""`)
	expr = regexp.MustCompile(`\[[^\]]*\]`).ReplaceAllString(expr, "[]")
	var out []string
	for _, loc := range namePattern.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		if promqlWords[name] || durationPattern.MatchString(name) {
			continue
		}
		if loc[0] > 0 && (expr[loc[0]-1] >= '0' && expr[loc[0]-1] <= '9' || expr[loc[0]-1] == '.') {
			continue // the exponent or unit of a number (1e-9)
		}
		rest := strings.TrimLeft(expr[loc[1]:], " \n")
		if strings.HasPrefix(rest, "(") {
			continue // a function call
		}
		before := strings.TrimRight(expr[:loc[0]], " \n")
		if strings.HasSuffix(before, "(") || strings.HasSuffix(before, ",") {
			// inside by (...)/on (...)? only when the list follows a keyword
			open := strings.LastIndex(before, "(")
			kw := strings.Fields(before[:open])
			if len(kw) > 0 && (kw[len(kw)-1] == "by" || kw[len(kw)-1] == "on" || kw[len(kw)-1] == "without" ||
				kw[len(kw)-1] == "ignoring" || kw[len(kw)-1] == "group_left" || kw[len(kw)-1] == "group_right") {
				continue
			}
			if strings.HasSuffix(before, ",") {
				continue
			}
		}
		out = append(out, name)
	}
	return out
}

func TestMetricNamesOfExpressions(t *testing.T) {
	got := metricNames(`histogram_quantile(0.95, sum by (le, task_name) (rate(task_execution_times_bucket{job=~"$job"}[5m]))) / on (backend, name) file_store_max_size or on () vector(0) / clamp_min(x_total, 1e-9) offset 1h`)
	want := []string{"task_execution_times_bucket", "file_store_max_size", "x_total"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("metricNames = %v, want %v", got, want)
	}
}

// TestPublicRulesNameOnlyPublicMetrics: the public endpoint's rules use
// only what it exposes (the other sources have no golden file; the
// end-to-end test proves their names by querying them).
func TestPublicRulesNameOnlyPublicMetrics(t *testing.T) {
	known := publicNames(t)
	for _, r := range loadRules(t, "kiln.rules.yml") {
		for _, name := range metricNames(r.Expr) {
			if !known[name] {
				t.Errorf("rule %s%s uses %s, which the public endpoint does not expose", r.Record, r.Alert, name)
			}
		}
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	file       string
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Title      string `json:"title"`
		Type       string `json:"type"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		GridPos struct{ X, Y, W, H int } `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func loadDashboards(t *testing.T) []dashboard {
	t.Helper()
	var out []dashboard
	for _, file := range files(t, "grafana-*.json") {
		body, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		d := dashboard{file: file}
		if err := json.Unmarshal(body, &d); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out = append(out, d)
	}
	return out
}

// expand replaces the Grafana variables of a query with what a user who
// picked "All" and looks at the last hours would send to Prometheus.
func expand(expr string) string {
	return strings.NewReplacer(
		"$__rate_interval", "5m", "$__interval", "1m", "$__range", "6h",
		"$job", ".+", "$instance", ".+", "$scope", ".+", "$pushgateway", ".+", "$runner", ".+", "$expire_host", ".+",
	).Replace(expr)
}

// labelValuesMetric is the selector of a label_values(selector, label)
// variable query.
var labelValuesMetric = regexp.MustCompile(`^label_values\((.*), *[a-zA-Z_]+\)$`)

// TestGrafanaDashboards: each dashboard is well-formed for Grafana (ids,
// grid, data source variable), every query is valid PromQL once its
// variables are expanded, and the public dashboard names only metrics the
// public endpoint exposes.
func TestGrafanaDashboards(t *testing.T) {
	bin := promtool(t)
	dashboards := loadDashboards(t)
	if len(dashboards) < 4 {
		t.Errorf("%d dashboards; want the public endpoint, the server, the runners and the pushed jobs", len(dashboards))
	}
	uids := map[string]bool{}
	public := publicNames(t)
	types := map[string]bool{"timeseries": true, "stat": true, "gauge": true, "bargauge": true, "table": true}
	var check strings.Builder
	check.WriteString("groups:\n  - name: dashboards\n    rules:\n")
	query := func(expr string) {
		check.WriteString("      - record: dashboard:check\n        expr: " + strconvQuote(expand(expr)) + "\n")
	}
	for _, d := range dashboards {
		if d.UID == "" || d.Title == "" || len(d.Panels) == 0 || uids[d.UID] {
			t.Errorf("%s: needs a uid of its own, a title and panels", d.file)
		}
		uids[d.UID] = true
		vars := map[string]bool{}
		for _, v := range d.Templating.List {
			vars[v.Name] = true
			if v.Type == "query" {
				m := labelValuesMetric.FindStringSubmatch(v.Query)
				if m == nil {
					t.Errorf("%s: variable $%s: %q is not label_values(selector, label)", d.file, v.Name, v.Query)
					continue
				}
				query(m[1])
			}
		}
		if !vars["datasource"] {
			t.Errorf("%s lacks the $datasource variable", d.file)
		}
		isPublic := d.UID == "kiln-farm"
		if isPublic && (!vars["job"] || !vars["scope"]) {
			t.Errorf("%s lacks the $job or $scope variable", d.file)
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d used twice", d.file, p.ID)
			}
			ids[p.ID] = true
			if p.Title == "" || !types[p.Type] || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: panel %d (%q) needs a title, a known type (got %q) and the ${datasource} variable", d.file, p.ID, p.Title, p.Type)
			}
			if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
				t.Errorf("%s: panel %q does not fit Grafana's 24-column grid: %+v", d.file, p.Title, p.GridPos)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", d.file, p.Title)
			}
			for _, tg := range p.Targets {
				query(tg.Expr)
				if !isPublic {
					continue
				}
				for _, name := range metricNames(expand(tg.Expr)) {
					if !public[name] {
						t.Errorf("%s: panel %q queries %s, which the public endpoint does not expose", d.file, p.Title, name)
					}
				}
			}
		}
	}
	file := filepath.Join(t.TempDir(), "dashboards.rules.yml")
	if err := os.WriteFile(file, []byte(check.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("a dashboard query is not valid PromQL: %v\n%s", err, out)
	}
}

// strconvQuote quotes an expression for YAML (a JSON string is valid YAML).
func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
