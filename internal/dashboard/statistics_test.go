package dashboard_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/statistics"
	"github.com/kiln-build/kiln/internal/testdb"
)

// byHand is the nearest-rank percentile of values, computed from the raw
// values as a person would: sort, take the ⌈p·n/100⌉-th.
func byHand(values []time.Duration, p int) float64 {
	s := slices.Clone(values)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[rank-1].Seconds()
}

// TestStatisticsMatchHandComputation: the run count, outcomes, success
// rate and percentiles of the seeded runs, in the JSON and on the page,
// equal those computed by hand from the runs themselves; and a private
// workspace's runs are in nobody's figures but its members'.
func TestStatisticsMatchHandComputation(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		s := f.seedRuns()
		day := s.Day.Format(time.DateOnly)
		want := map[string]float64{
			"runs": 12, "success_rate": 7.0 / 10,
			"p50": byHand(s.Durations, 50), "p90": byHand(s.Durations, 90), "p99": byHand(s.Durations, 99),
			"wait50": byHand(s.Waits, 50), "wait90": byHand(s.Waits, 90),
		}
		if want["p50"] != 10 || want["p90"] != 100 || want["p99"] != 1000 || want["wait50"] != 5 || want["wait90"] != 20 {
			t.Fatalf("the seeded runs are not the ones this test was written for: %v", want)
		}

		// JSON, anonymously
		var rep struct {
			From, To   string
			Total      struct{ Runs int64 }
			Workspaces []struct {
				Workspace string `json:"workspace"`
			}
		}
		body := f.get("/api/1.0/statistics/?from="+day+"&to="+day, "").body
		if err := json.Unmarshal([]byte(body), &rep); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		var raw map[string]any
		json.Unmarshal([]byte(body), &raw)
		var lintian map[string]any
		for _, task := range raw["tasks"].([]any) {
			if m := task.(map[string]any); m["task_name"] == "lintian" {
				lintian = m
			}
			if m := task.(map[string]any); m["task_name"] == "hushedtask" {
				t.Fatalf("an anonymous caller's statistics hold a private task: %v", m)
			}
		}
		if lintian == nil {
			t.Fatalf("no lintian in %s", body)
		}
		dur, wait := lintian["duration"].(map[string]any), lintian["queue_wait"].(map[string]any)
		got := map[string]float64{"runs": lintian["runs"].(float64), "success_rate": lintian["success_rate"].(float64),
			"p50": dur["p50_seconds"].(float64), "p90": dur["p90_seconds"].(float64), "p99": dur["p99_seconds"].(float64),
			"wait50": wait["p50_seconds"].(float64), "wait90": wait["p90_seconds"].(float64)}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("JSON %s = %v, by hand %v", k, got[k], v)
			}
		}
		outcomes := lintian["outcomes"].(map[string]any)
		for o, n := range s.Outcomes {
			if outcomes[o].(float64) != float64(n) {
				t.Errorf("JSON outcome %s = %v, seeded %d", o, outcomes[o], n)
			}
		}
		if dur["count"].(float64) != float64(len(s.Durations)) || wait["count"].(float64) != float64(len(s.Waits)) {
			t.Errorf("JSON counts %v and %v, seeded %d and %d", dur["count"], wait["count"], len(s.Durations), len(s.Waits))
		}
		// the public total: the seeded runs and wr:pub
		if rep.Total.Runs != 13 || rep.From != day || rep.To != day {
			t.Errorf("anonymous total %d runs from %s to %s, want 13 on %s", rep.Total.Runs, rep.From, rep.To, day)
		}
		for _, ws := range rep.Workspaces {
			if strings.Contains(ws.Workspace, "hushed") {
				t.Fatalf("an anonymous caller's statistics name the private workspace")
			}
		}

		// the page, anonymously and as the member who sees the private run
		page := f.get("/statistics/?from="+day+"&to="+day, "")
		page.want(t, 200, "Per task")
		row := figures(t, page.body, "tasks", "Worker/lintian||")
		for k, v := range want {
			attr := "data-seconds"
			switch k {
			case "runs":
				attr = "text"
			case "success_rate":
				attr = "data-rate"
			}
			if row[k][attr] != strconv.FormatFloat(v, 'f', -1, 64) {
				t.Errorf("page %s = %q (%s), by hand %v", k, row[k][attr], attr, v)
			}
		}
		if row["success_rate"]["text"] != "70.0 %" || row["p99"]["text"] != "16 min 40 s" || row["wait50"]["text"] != "5 s" {
			t.Errorf("the page shows %q, %q and %q", row["success_rate"]["text"], row["p99"]["text"], row["wait50"]["text"])
		}
		if strings.Contains(page.body, "hushed") {
			t.Fatal("an anonymous visitor's statistics page names private things")
		}
		member := f.get("/statistics/?from="+day+"&to="+day, f.session("alice"))
		hushed := figures(t, member.body, "tasks", "Worker/hushedtask||")
		if hushed["runs"]["text"] != "1" || hushed["success_rate"]["data-rate"] != "0" {
			t.Errorf("alice sees the private task as %v", hushed)
		}
	})
}

var figureRE = regexp.MustCompile(`<td class="num" data-figure="([a-z0-9_]+)"((?: data-[a-z]+="[^"]*")*)>(.*?)</td>`)
var attrRE = regexp.MustCompile(`(data-[a-z]+)="([^"]*)"`)
var tagRE = regexp.MustCompile(`<[^>]+>`)

// figures reads the cells of a row of a statistics table: figure →
// attribute (or "text") → value.
func figures(t *testing.T, body, table, group string) map[string]map[string]string {
	t.Helper()
	start := strings.Index(body, `id="`+table+`"`)
	if start < 0 {
		t.Fatalf("no table %s", table)
	}
	rest := body[start:]
	i := strings.Index(rest, `data-group="`+group+`"`)
	if i < 0 {
		t.Fatalf("no row %s in table %s", group, table)
	}
	rest = rest[i:]
	rest = rest[:strings.Index(rest, "</tr>")]
	out := map[string]map[string]string{}
	for _, m := range figureRE.FindAllStringSubmatch(rest, -1) {
		cell := map[string]string{"text": strings.ReplaceAll(tagRE.ReplaceAllString(m[3], ""), "\u00a0", " ")}
		for _, a := range attrRE.FindAllStringSubmatch(m[2], -1) {
			cell[a[1]] = a[2]
		}
		out[m[1]] = cell
	}
	return out
}

// TestBrowserChartsShowTheSeededRuns: the charts of the statistics page
// and of the overview draw one bar per seeded outcome and period, and per
// run-time bucket, with the seeded counts.
func TestBrowserChartsShowTheSeededRuns(t *testing.T) {
	f := newFarm(t, testdb.SQLite(t))
	s := f.seedRuns()
	day := s.Day.Format(time.DateOnly)
	tb := newTab(t)
	tb.open(f.srv.URL+"/statistics/?from="+day+"&to="+day, 200)
	bars := func(chart string) map[string]int64 {
		t.Helper()
		got := map[string]int64{}
		for _, b := range eval[[]map[string]string](tb, `Array.from(document.querySelectorAll("#`+chart+
			` svg rect")).map(r => ({key: r.dataset.key, value: r.dataset.value, w: String(r.getBBox().width), h: String(r.getBBox().height)}))`) {
			n, _ := strconv.ParseInt(b["value"], 10, 64)
			if w, _ := strconv.ParseFloat(b["w"], 64); w <= 0 {
				t.Errorf("bar %s of %s has no width", b["key"], chart)
			}
			if h, _ := strconv.ParseFloat(b["h"], 64); h <= 0 {
				t.Errorf("bar %s of %s has no height", b["key"], chart)
			}
			got[b["key"]] += n
		}
		return got
	}
	// runs per hour, by outcome: the seeded ones and wr:pub (a success)
	perOutcome := map[string]int64{}
	for key, n := range bars("runs") {
		_, outcome, _ := strings.Cut(key, " ")
		perOutcome[outcome] += n
	}
	want := map[string]int64{"success": int64(s.Outcomes["success"]) + 1}
	for o, n := range s.Outcomes {
		if o != "success" {
			want[o] = int64(n)
		}
	}
	if fmt.Sprint(perOutcome) != fmt.Sprint(want) {
		t.Errorf("runs chart: %v, want %v", perOutcome, want)
	}
	// run times, bucketed by hand: each seeded time sits on a bound;
	// wr:pub ran 120 s, in the 125 s bucket
	wantBuckets := map[string]int64{"125000000": 1}
	for _, d := range s.Durations {
		wantBuckets[strconv.FormatInt(d.Microseconds(), 10)]++
	}
	if got := bars("durations"); fmt.Sprint(got) != fmt.Sprint(wantBuckets) {
		t.Errorf("run time chart: %v, want %v", got, wantBuckets)
	}
	if n := eval[int](tb, `document.querySelectorAll("#durations svg rect").length`); n != len(wantBuckets) {
		t.Errorf("run time chart has %d bars, want %d", n, len(wantBuckets))
	}
	// the overview's last 24 hours hold the same runs
	tb.open(f.srv.URL+"/", 200)
	var total int64
	for _, n := range bars("last-24h") {
		total += n
	}
	if total != int64(len(s.Durations))+2 {
		t.Errorf("the last 24 hours chart holds %d runs, want %d", total, len(s.Durations)+2)
	}
	_ = statistics.Bounds
}
