package openmetrics

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The Prometheus rules and the Grafana dashboard under monitoring/ are
// part of the product: these tests keep them valid PromQL and keep every
// metric they name one that kiln really exposes.

const monitoringDir = "../../monitoring"

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

// exposedNames are the metric names of the golden exposition, with the
// sample suffixes of histograms.
func exposedNames(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "metrics.text.golden"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
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
	return names
}

var (
	// a metric name in PromQL: an identifier followed by a selector or
	// standing alone, and not a function, keyword or label
	namePattern = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlWords = map[string]bool{"sum": true, "by": true, "on": true, "and": true, "or": true, "unless": true, "vector": true,
		"clamp_min": true, "histogram_quantile": true, "without": true, "ignoring": true, "le": true, "max": true, "min": true}
)

// rule is one recording or alerting rule of monitoring/kiln.rules.yml.
type rule struct {
	Record string `yaml:"record"`
	Alert  string `yaml:"alert"`
	Expr   string `yaml:"expr"`
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	body, err := os.ReadFile(filepath.Join(monitoringDir, "kiln.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(body, &file); err != nil {
		t.Fatal(err)
	}
	var out []rule
	for _, g := range file.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatal("kiln.rules.yml has no rules")
	}
	return out
}

// knownNames are kiln's exposed names plus the recording rules' series.
func knownNames(t *testing.T, rules []rule) map[string]bool {
	known := exposedNames(t)
	for _, r := range rules {
		if r.Record != "" {
			known[r.Record] = true
		}
	}
	return known
}

// metricNames lists the metric names an expression selects.
func metricNames(expr string) []string {
	// drop label matchers and strings: they hold label names and values
	expr = regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(expr, "{}")
	expr = regexp.MustCompile(`"[^"]*"`).ReplaceAllString(expr, `""`)
	var out []string
	for _, loc := range namePattern.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		if promqlWords[name] || regexp.MustCompile(`^[0-9]`).MatchString(name) {
			continue
		}
		rest := strings.TrimLeft(expr[loc[1]:], " ")
		if strings.HasPrefix(rest, "(") {
			continue // a function call
		}
		before := strings.TrimRight(expr[:loc[0]], " ")
		if strings.HasSuffix(before, "(") || strings.HasSuffix(before, ",") {
			// inside by (...)/on (...)? only when the list follows a keyword
			open := strings.LastIndex(before, "(")
			kw := strings.Fields(before[:open])
			if len(kw) > 0 && (kw[len(kw)-1] == "by" || kw[len(kw)-1] == "on" || kw[len(kw)-1] == "without" || kw[len(kw)-1] == "ignoring") {
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
	got := metricNames(`histogram_quantile(0.95, sum by (le, task_name) (task_execution_times_bucket{job=~"$job"})) / on (backend, name) file_store_max_size or on () vector(0)`)
	want := []string{"task_execution_times_bucket", "file_store_max_size"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("metricNames = %v, want %v", got, want)
	}
}

func TestPrometheusRules(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{{"check", "rules", filepath.Join(monitoringDir, "kiln.rules.yml")}, {"test", "rules", filepath.Join(monitoringDir, "kiln.rules.test.yml")}} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rs := loadRules(t)
	known := knownNames(t, rs)
	known["up"] = true // Prometheus' own series of every scrape
	for _, r := range rs {
		for _, name := range metricNames(r.Expr) {
			if !known[name] {
				t.Errorf("rule %s%s uses %s, which kiln does not expose", r.Record, r.Alert, name)
			}
		}
	}
}

func TestGrafanaDashboard(t *testing.T) {
	bin := promtool(t)
	body, err := os.ReadFile(filepath.Join(monitoringDir, "grafana-kiln-farm.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
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
	if err := json.Unmarshal(body, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID == "" || dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatal("the dashboard needs a uid, a title and panels")
	}
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
	}
	for _, v := range []string{"datasource", "job", "scope"} {
		if !vars[v] {
			t.Errorf("the dashboard lacks the $%s variable", v)
		}
	}
	known := knownNames(t, loadRules(t))
	types := map[string]bool{"timeseries": true, "stat": true, "gauge": true, "bargauge": true, "table": true}
	ids := map[int]bool{}
	var check strings.Builder
	check.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Title == "" || !types[p.Type] || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %d (%q): needs a title, a known type (got %q) and the ${datasource} variable", p.ID, p.Title, p.Type)
		}
		if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
			t.Errorf("panel %q does not fit Grafana's 24-column grid: %+v", p.Title, p.GridPos)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			expr := strings.NewReplacer("$job", ".*", "$scope", ".*").Replace(tg.Expr)
			check.WriteString("      - record: dashboard:check\n        expr: " + strconvQuote(expr) + "\n")
			for _, name := range metricNames(expr) {
				if !known[name] {
					t.Errorf("panel %q queries %s, which kiln does not expose", p.Title, name)
				}
			}
		}
	}
	file := filepath.Join(t.TempDir(), "dashboard.rules.yml")
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
