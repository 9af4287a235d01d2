package report_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/santhosh-tekuri/jsonschema/v6"

	kmodel "github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/openmetrics"
	"github.com/kiln-build/kiln/internal/report"
	"github.com/kiln-build/kiln/internal/seed"
	"github.com/kiln-build/kiln/internal/statistics"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// schema compiles docs/report.schema.json once.
var schema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	f, err := os.Open(filepath.Join("..", "..", "docs", "report.schema.json"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("report.schema.json", doc); err != nil {
		return nil, err
	}
	return c.Compile("report.schema.json")
})

// validate checks a written report against the schema shipped in docs/.
func validate(t *testing.T, body []byte) {
	t.Helper()
	sch, err := schema()
	if err != nil {
		t.Fatalf("docs/report.schema.json: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the report is not JSON: %v", err)
	}
	if err := sch.Validate(doc); err != nil {
		t.Fatalf("the report does not validate against docs/report.schema.json: %v", err)
	}
}

// farm opens a store on dsn and fills it with a small farm that has every
// kind of object, and work finished over the last days.
func farm(t *testing.T, dsn string) *store.SQL {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Bootstrap(ctx, "kiln_report-test-admin", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	sz := seed.Sizes{Scopes: 2, WorkspacesEach: 2, Users: 12, Workers: 6, WorkRequests: 300, Artifacts: 60, FilesPerArtifact: 2,
		RequestsPerDay: 30}
	if err := seed.Fill(ctx, st, sz, rand.New(rand.NewSource(11)), nil); err != nil {
		t.Fatal(err)
	}
	// a store with a maximum, a token in use: families the seed leaves out
	max := int64(1 << 30)
	if err := st.FileStores().Create(ctx, &kmodel.FileStore{Name: "archive", Backend: kmodel.BackendLocal, MaxSize: &max,
		Configuration: json.RawMessage(`{"base_directory": "` + t.TempDir() + `"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Authenticate(ctx, "kiln_report-test-admin"); err != nil {
		t.Fatal(err)
	}
	ws, err := st.Workspaces().List(ctx, store.Query{Limit: 1})
	if err != nil || len(ws) == 0 {
		t.Fatalf("no workspace: %v", err)
	}
	w := ws[0]
	c := &kmodel.Collection{WorkspaceID: w.ID, Category: "debian:suite", Name: "sid"}
	for _, err := range []error{
		st.Groups().Create(ctx, &kmodel.Group{Name: "uploaders", ScopeID: w.ScopeID}),
		st.Assets().Create(ctx, &kmodel.Asset{WorkspaceID: w.ID, Category: "debusine:signing-key", Data: json.RawMessage(`{}`)}),
		st.WorkflowTemplates().Create(ctx, &kmodel.WorkflowTemplate{WorkspaceID: w.ID, Name: "sbuild-all", TaskName: "sbuild"}),
		st.Collections().Create(ctx, c),
		st.AddCollectionItem(ctx, &kmodel.CollectionItem{CollectionID: c.ID, Name: "hello", Category: "debian:binary-package",
			Data: json.RawMessage(`{}`)}, nil),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// fixed serves one snapshot, as the endpoint's source.
type fixed struct{ snap *store.Snapshot }

func (f fixed) Snapshot(context.Context) (*store.Snapshot, error) { return f.snap, nil }

// TestReportEqualsScrape: from one snapshot, the report and a scrape of
// the public endpoint carry the same figures — every series of every
// family, label for label and value for value, bucket for bucket, both
// ways — and the report's service status is the endpoint's; the document
// validates against docs/report.schema.json. On SQLite and PostgreSQL.
func TestReportEqualsScrape(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		st := farm(t, dsn)
		now := time.Now()
		snap, err := st.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := statistics.ParseWindow("30d", now)
		stats, err := statistics.Compute(ctx, st, nil, w, statistics.Selection{})
		if err != nil {
			t.Fatal(err)
		}
		doc, err := report.Build(snap, stats, now)
		if err != nil {
			t.Fatal(err)
		}
		body, err := doc.Encode()
		if err != nil {
			t.Fatal(err)
		}
		validate(t, body)
		// compare what was written, not what was built
		var written struct {
			report.Document
			Statistics json.RawMessage `json:"statistics"`
		}
		if err := json.Unmarshal(body, &written); err != nil {
			t.Fatal(err)
		}

		ep := openmetrics.New(fixed{snap}, openmetrics.Options{})
		rec := httptest.NewRecorder()
		ep.ServeHTTP(rec, httptest.NewRequest("GET", "/api/1.0/open-metrics/", nil))
		parser := expfmt.NewTextParser(model.LegacyValidation)
		scraped, err := parser.TextToMetricFamilies(rec.Body)
		if err != nil {
			t.Fatalf("the scrape: %v", err)
		}
		if len(scraped) < 15 {
			t.Fatalf("the farm has only %d families: the comparison proves little", len(scraped))
		}
		if got, want := sortedKeys(written.Metrics), sortedKeys(scraped); !slices.Equal(got, want) {
			t.Fatalf("the report has families %v, the scrape %v", got, want)
		}
		series := 0
		for name, mf := range scraped {
			f := written.Metrics[name]
			if f.Help != mf.GetHelp() || f.Type != strings.ToLower(mf.GetType().String()) {
				t.Errorf("%s: the report says %s %q, the scrape %s %q", name, f.Type, f.Help, mf.GetType(), mf.GetHelp())
			}
			want := map[string]string{}
			for _, m := range mf.Metric {
				want[labelKey(labelsOf(m))] = scrapedFigures(m)
			}
			got := map[string]string{}
			for _, s := range f.Series {
				got[labelKey(s.Labels)] = reportFigures(s)
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s{%s}: the report has %q, the scrape %q", name, k, got[k], v)
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("%s{%s}: in the report, not in the scrape", name, k)
				}
			}
			series += len(want)
		}
		t.Logf("%d families, %d series compared", len(scraped), series)

		rec = httptest.NewRecorder()
		ep.ServiceStatus().ServeHTTP(rec, httptest.NewRequest("GET", "/api/1.0/service-status/", nil))
		var status openmetrics.ServiceStatus
		if err := json.Unmarshal(rec.Body.Bytes(), &status); err != nil {
			t.Fatal(err)
		}
		if a, b := mustJSON(t, status), mustJSON(t, written.ServiceStatus); a != b {
			t.Errorf("service status: the endpoint says\n%s\nthe report\n%s", a, b)
		}
		if stats.Total.Runs == 0 || len(stats.Tasks) == 0 {
			t.Fatalf("the farm finished no work in the window: %+v", stats.Total)
		}
		var reported any
		if err := json.Unmarshal(written.Statistics, &reported); err != nil {
			t.Fatal(err)
		}
		var computed any
		if err := json.Unmarshal([]byte(mustJSON(t, stats)), &computed); err != nil {
			t.Fatal(err)
		}
		if a, b := mustJSON(t, computed), mustJSON(t, reported); a != b {
			t.Errorf("statistics: computed\n%s\nreported\n%s", a, b)
		}
		if written.SchemaVersion != report.SchemaVersion || !written.SnapshotAt.Equal(snap.Taken) {
			t.Errorf("header: %d %s", written.SchemaVersion, written.SnapshotAt)
		}
	})
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func labelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, lp := range m.Label {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

func labelKey(l map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(l) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

// scrapedFigures writes a scraped series' figures the way reportFigures
// writes a reported one's.
func scrapedFigures(m *dto.Metric) string {
	if m.Gauge != nil {
		return fmt.Sprint(m.GetGauge().GetValue())
	}
	h := m.GetHistogram()
	var b strings.Builder
	for _, bk := range h.Bucket {
		fmt.Fprintf(&b, "le=%v:%d ", bk.GetUpperBound(), bk.GetCumulativeCount())
	}
	fmt.Fprintf(&b, "count=%d sum=%v", h.GetSampleCount(), h.GetSampleSum())
	return b.String()
}

func reportFigures(s report.Series) string {
	if s.Value != nil {
		return fmt.Sprint(*s.Value)
	}
	var b strings.Builder
	for _, bk := range s.Buckets {
		fmt.Fprintf(&b, "le=%v:%d ", bk.Le, bk.Count)
	}
	if s.Count != nil && s.Sum != nil {
		// the exposition's +Inf bucket is the count
		fmt.Fprintf(&b, "le=%v:%d count=%d sum=%v", math.Inf(1), *s.Count, *s.Count, *s.Sum)
	}
	return b.String()
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSchemaRefuses: the schema is strict enough to catch a report that
// drifted from it: each document below is the report of a small farm with
// one thing broken.
func TestSchemaRefuses(t *testing.T) {
	body := smallReport(t)
	validate(t, body)
	sch, err := schema()
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(d map[string]any){
		"no metrics":         func(d map[string]any) { delete(d, "metrics") },
		"an unknown field":   func(d map[string]any) { d["extra"] = 1 },
		"another version":    func(d map[string]any) { d["schema_version"] = 2 },
		"a time that is not": func(d map[string]any) { d["generated_at"] = "yesterday" },
		"a gauge without value": func(d map[string]any) {
			delete(d["metrics"].(map[string]any)["work_requests"].(map[string]any)["series"].([]any)[0].(map[string]any), "value")
		},
		"a histogram without its count": func(d map[string]any) {
			delete(d["metrics"].(map[string]any)["tokens_last_seen"].(map[string]any)["series"].([]any)[0].(map[string]any), "count")
		},
		"a bad label name": func(d map[string]any) {
			d["metrics"].(map[string]any)["work_requests"].(map[string]any)["series"].([]any)[0].(map[string]any)["labels"] = map[string]any{"task-type": "x"}
		},
		"a success rate of 2": func(d map[string]any) {
			d["statistics"].(map[string]any)["total"].(map[string]any)["success_rate"] = 2
		},
		"a task type kiln lacks": func(d map[string]any) {
			d["statistics"].(map[string]any)["tasks"].([]any)[0].(map[string]any)["task_type"] = "Build"
		},
		"a task with an unknown field": func(d map[string]any) {
			d["statistics"].(map[string]any)["tasks"].([]any)[0].(map[string]any)["owner"] = "alice"
		},
		"service status without a worker type": func(d map[string]any) {
			delete(d["service_status"].(map[string]any)["workers"].(map[string]any), "signing")
		},
	} {
		var d map[string]any
		if err := json.Unmarshal(body, &d); err != nil {
			t.Fatal(err)
		}
		edit(d)
		b, _ := json.Marshal(d)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(doc); err == nil {
			t.Errorf("%s: the schema accepts it", name)
		}
	}
}

// rollups serves the statistics of a farm that ran one task once.
type rollups struct{}

func (rollups) Rollup(context.Context, store.RollupQuery) (*store.Rollup, error) {
	once := make([]int64, len(statistics.Bounds)+1)
	once[3] = 1
	return &store.Rollup{
		Groups: []store.RollupGroup{{WorkspaceID: 1, TaskType: kmodel.TaskWorker, TaskName: "sbuild",
			Runs: map[string]int64{"success": 1}, Durations: once, Waits: once}},
		Workspaces: map[int64]store.WorkspaceName{1: {Name: "main", ScopeID: 1, ScopeName: "debian"}},
	}, nil
}

// smallSnapshot is a snapshot with a gauge and a histogram family.
func smallSnapshot() *store.Snapshot {
	return &store.Snapshot{
		Taken:      time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		ScopeNames: map[int64]string{1: "debian"},
		Totals: []store.Total{
			{Family: "work_requests", Value: 2, Labels: store.Labels{"task_type": "Worker", "task_name": "sbuild", "scope_id": "1",
				"status": "pending", "host_architecture": "amd64", "backend": "unshare"}},
		},
		TokenLastSeen: store.AgeHistogram{Counts: []int64{0, 1, 0, 0, 0, 0, 0, 0}, Sum: 3600}, // used an hour ago
	}
}

// source is a report.Source of a fixed snapshot and rollups.
type source struct {
	fixed
	rollups
}

// smallReport is the encoded report of smallSnapshot.
func smallReport(t *testing.T) []byte {
	t.Helper()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	doc, err := report.Generate(context.Background(), source{fixed{smallSnapshot()}, rollups{}}, "7d", now)
	if err != nil {
		t.Fatal(err)
	}
	body, err := doc.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return body
}
