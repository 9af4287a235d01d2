package openmetrics

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestReferenceMistakes checks, through the real store on both databases,
// each point docs/architecture.md#reference-mistakes lists as wrong in the reference implementation
// (Debusine 0.12).
func TestReferenceMistakes(t *testing.T) {
	scenarios := []struct {
		name string
		run  func(t *testing.T, f *farm)
	}{
		{"workspaces private counts workspaces that are not public", func(t *testing.T, f *farm) {
			debian := f.scope("debian")
			f.workspace(debian, "public", true, 0)
			f.workspace(debian, "private-a", false, 0)
			f.workspace(debian, "private-b", false, time.Hour)
			fams := gather(t, f.s)
			if got := sum(fams["workspaces"], map[string]string{"private": "1"}); got != 2 {
				t.Errorf("private workspaces: %v, want 2", got)
			}
			if got := sum(fams["workspaces"], map[string]string{"private": "0"}); got != 1 {
				t.Errorf("public workspaces: %v, want 1", got)
			}
			if got := gaugeOf(t, fams["workspaces"], map[string]string{"private": "1", "expires": "1", "scope": "debian"}); got != 1 {
				t.Errorf("private expiring workspaces: %v, want 1", got)
			}
		}},
		{"users leaves out the system user", func(t *testing.T, f *farm) {
			if ok, err := f.s.Bootstrap(f.ctx, "kiln_secret", ""); err != nil || !ok {
				t.Fatalf("bootstrap: %v %v", ok, err)
			}
			sys, err := f.s.Users().Lookup(f.ctx, store.SystemUsername, nil)
			if err != nil || !sys.System {
				t.Fatalf("the system user must exist for this test: %v %+v", err, sys)
			}
			f.user("alice", nil)
			fams := gather(t, f.s)
			if got := sum(fams["users"], nil); got != 2 { // admin and alice
				t.Errorf("users: %v, want 2 (admin, alice; not %s)", got, store.SystemUsername)
			}
		}},
		{"user_identities counts linked identities by the user's active flag", func(t *testing.T, f *farm) {
			alice := f.user("alice", map[string]string{"salsa.debian.org": "a1", "gitlab.com": "a2"})
			f.user("bob", map[string]string{"salsa.debian.org": "b1"})
			f.user("carol", nil)
			f.deactivate(alice)
			fams := gather(t, f.s)
			mf := fams["user_identities"]
			if got := sum(mf, nil); got != 3 {
				t.Errorf("identities: %v, want 3", got)
			}
			if got := gaugeOf(t, mf, map[string]string{"active": "0", "issuer": "salsa.debian.org"}); got != 1 {
				t.Errorf("inactive salsa identities: %v, want 1", got)
			}
			if got := gaugeOf(t, mf, map[string]string{"active": "1", "issuer": "salsa.debian.org"}); got != 1 {
				t.Errorf("active salsa identities: %v, want 1", got)
			}
		}},
		{"a workflow creator without an identity never yields an empty issuer", func(t *testing.T, f *farm) {
			debian := f.scope("debian")
			ws := f.workspace(debian, "main", true, 0)
			dave := f.user("dave", nil)
			f.clk.Set(farmNow.Add(-3 * day))
			f.submit(model.TaskWorkflow, "sbuild", ws, &dave, nil, nil)
			f.clk.Set(farmNow)
			fams := gather(t, f.s)
			if n, _, _ := histOf(t, fams["user_activity"], map[string]string{"scope": "debian"}); n != 1 {
				t.Errorf("user_activity count %d, want 1", n)
			}
			if mf, ok := fams["user_identities_activity"]; ok {
				t.Errorf("user_identities_activity has series for a user without identities: %v", mf)
			}
			for _, mf := range fams {
				for _, m := range mf.Metric {
					if v, ok := labelValue(m, "issuer"); ok && v == "" {
						t.Errorf("%s has an empty issuer", mf.GetName())
					}
				}
			}
		}},
		{"histograms count distinct pairs by the most recent root workflow, with _count and _sum", func(t *testing.T, f *farm) {
			debian, kali := f.scope("debian"), f.scope("kali")
			main, rolling := f.workspace(debian, "main", true, 0), f.workspace(kali, "rolling", true, 0)
			bob := f.user("bob", map[string]string{"salsa.debian.org": "bob", "gitlab.com": "bob"})
			var latest int64
			for _, age := range []time.Duration{40 * day, 20 * day, 5 * day} {
				f.clk.Set(farmNow.Add(-age))
				latest = f.submit(model.TaskWorkflow, "sbuild", main, &bob, nil, nil)
			}
			f.clk.Set(farmNow.Add(-day))
			f.submit(model.TaskWorkflow, "sub", main, &bob, &latest, nil) // not a root
			f.clk.Set(farmNow.Add(-100 * day))
			f.submit(model.TaskWorkflow, "sbuild", rolling, &bob, nil, nil)
			f.clk.Set(farmNow)
			fams := gather(t, f.s)
			n, s, b := histOf(t, fams["user_activity"], map[string]string{"scope": "debian"})
			if n != 1 || s != 5 || b[3] != 0 || b[7] != 1 {
				t.Errorf("user_activity{debian}: count %d sum %v buckets %v; want one observation of 5 days", n, s, b)
			}
			n, s, _ = histOf(t, fams["user_activity"], map[string]string{"scope": "kali"})
			if n != 1 || s != 100 {
				t.Errorf("user_activity{kali}: count %d sum %v, want 1, 100", n, s)
			}
			for _, issuer := range []string{"salsa.debian.org", "gitlab.com"} {
				n, s, _ := histOf(t, fams["user_identities_activity"], map[string]string{"issuer": issuer, "scope": "debian"})
				if n != 1 || s != 5 {
					t.Errorf("user_identities_activity{%s, debian}: count %d sum %v, want 1, 5", issuer, n, s)
				}
			}
			if got := len(fams["user_identities_activity"].Metric); got != 4 {
				t.Errorf("user_identities_activity: %d series, want 4 (2 issuers × 2 scopes)", got)
			}
		}},
		{"file_store_max_size only for stores with a maximum", func(t *testing.T, f *farm) {
			f.must(f.s.FileStores().Create(f.ctx, &model.FileStore{Name: "unbounded", Backend: model.BackendLocal}))
			f.must(f.s.FileStores().Create(f.ctx, &model.FileStore{Name: "bounded", Backend: model.BackendS3, MaxSize: maxSize(1000)}))
			fams := gather(t, f.s)
			if got := len(fams["file_store_size"].Metric); got != 2 {
				t.Errorf("file_store_size: %d series, want 2", got)
			}
			mf := fams["file_store_max_size"]
			if len(mf.Metric) != 1 || gaugeOf(t, mf, map[string]string{"backend": "S3", "name": "bounded"}) != 1000 {
				t.Errorf("file_store_max_size: %v", mf)
			}
		}},
		{"a label set that once had rows keeps reporting 0", func(t *testing.T, f *farm) {
			debian := f.scope("debian")
			ws := f.workspace(debian, "main", true, 0)
			a := f.artifact(ws, "debian:upload", nil, 0, 10)
			_, err := f.s.DeleteArtifact(f.ctx, a, nil)
			f.must(err)
			w := f.worker("gone", model.WorkerExternal, nil, external("s390x", nil, "s390x"), false)
			f.must(f.s.Workers().Delete(f.ctx, w, nil))
			tmpl := &model.WorkflowTemplate{WorkspaceID: ws, Name: "t", TaskName: "sbuild"}
			f.must(f.s.WorkflowTemplates().Create(f.ctx, tmpl))
			f.must(f.s.WorkflowTemplates().Delete(f.ctx, tmpl.ID, nil))
			fams := gather(t, f.s)
			if got := gaugeOf(t, fams["artifacts"], map[string]string{"category": "debian:upload", "scope": "debian"}); got != 0 {
				t.Errorf("artifacts: %v, want 0", got)
			}
			if got := gaugeOf(t, fams["artifact_file_size"], map[string]string{"category": "debian:upload", "scope": "debian"}); got != 0 {
				t.Errorf("artifact_file_size: %v, want 0", got)
			}
			if n, _, _ := histOf(t, fams["artifact_file_counts"], map[string]string{"category": "debian:upload", "scope": "debian"}); n != 0 {
				t.Errorf("artifact_file_counts count %d, want 0", n)
			}
			if got := gaugeOf(t, fams["workflow_templates"], map[string]string{"task_name": "sbuild", "scope": "debian"}); got != 0 {
				t.Errorf("workflow_templates: %v, want 0", got)
			}
			if got := gaugeOf(t, fams["workers"], map[string]string{"architecture_s390x": "1", "busy": "0", "connected": "0",
				"host_architecture": "s390x", "worker_type": "external"}); got != 0 {
				t.Errorf("workers: %v, want 0", got)
			}
		}},
		{"a histogram label set that once had observations keeps reporting, empty", func(t *testing.T, f *farm) {
			debian := f.scope("debian")
			ws := f.workspace(debian, "main", true, 0)
			alice := f.user("alice", map[string]string{"salsa.debian.org": "a1", "gitlab.com": "a2"})
			wf := f.submit(model.TaskWorkflow, "sbuild", ws, &alice, nil, nil)
			var salsa int64
			f.must(f.s.DB().QueryRowContext(f.ctx, "SELECT id FROM identities WHERE issuer = 'salsa.debian.org'").Scan(&salsa))
			f.must(f.s.Identities().Delete(f.ctx, salsa, nil))
			fams := gather(t, f.s)
			if n, sum, buckets := histOf(t, fams["user_identities_activity"], map[string]string{"issuer": "salsa.debian.org", "scope": "debian"}); n != 0 || sum != 0 || buckets[1] != 0 {
				t.Errorf("deleted identity's series: count %d, sum %v, le=1 %d; want an empty histogram", n, sum, buckets[1])
			}
			if n, _, _ := histOf(t, fams["user_identities_activity"], map[string]string{"issuer": "gitlab.com", "scope": "debian"}); n != 1 {
				t.Errorf("remaining identity: count %d, want 1", n)
			}
			// the user goes too (a user who created work requests cannot be
			// deleted: the workflow goes first)
			_, err := f.s.AbortWorkRequest(f.ctx, wf, "test", nil)
			f.must(err)
			f.must(f.s.WorkRequests().Delete(f.ctx, wf, nil))
			f.must(f.s.Users().Delete(f.ctx, alice, nil))
			fams = gather(t, f.s)
			if n, _, _ := histOf(t, fams["user_activity"], map[string]string{"scope": "debian"}); n != 0 {
				t.Errorf("user_activity of a scope without users: count %d, want an empty histogram", n)
			}
			for _, issuer := range []string{"salsa.debian.org", "gitlab.com"} {
				if n, _, _ := histOf(t, fams["user_identities_activity"], map[string]string{"issuer": issuer, "scope": "debian"}); n != 0 {
					t.Errorf("%s after the user went: count %d, want an empty histogram", issuer, n)
				}
			}
			if diffs, err := f.s.CheckTotals(f.ctx); err != nil || len(diffs) != 0 {
				t.Errorf("recount: %v %v", diffs, err)
			}
		}},
		{"no cartesian zero-fill of workers", func(t *testing.T, f *farm) {
			archs := []string{"amd64", "i386", "arm64", "armhf", "hurd-i386", "riscv64"}
			for i, a := range archs {
				f.worker("w"+a, model.WorkerExternal, nil, external(a, nil, a), false)
				_ = i
			}
			f.worker("srv", model.WorkerServer, nil, model.WorkerMetadata{}, false)
			fams := gather(t, f.s)
			mf := fams["workers"]
			if len(mf.Metric) != len(archs)+1 {
				t.Fatalf("workers: %d series, want %d (one per existing label set, not 2^%d)", len(mf.Metric), len(archs)+1, len(archs))
			}
			for _, m := range mf.Metric {
				l := labelMap(m)
				n := 0
				for k := range l {
					if strings.HasPrefix(k, "architecture_") {
						n++
					}
				}
				switch l["worker_type"] {
				case "external":
					if n != len(archs) || l["host_architecture"] == "" {
						t.Errorf("external series without every architecture label: %v", l)
					}
					if l[ArchitectureLabel(l["host_architecture"])] != "1" {
						t.Errorf("series does not support its own architecture: %v", l)
					}
				default:
					if n != 0 || l["host_architecture"] != "" || l["worker_pool"] != "" {
						t.Errorf("non-external series with architecture or pool labels: %v", l)
					}
				}
			}
		}},
		{"groups and workspaces carry scope", func(t *testing.T, f *farm) {
			debian, kali := f.scope("debian"), f.scope("kali")
			f.workspace(debian, "main", true, 0)
			f.workspace(kali, "main", true, 0)
			f.must(f.s.Groups().Create(f.ctx, &model.Group{ScopeID: kali, Name: "team", Ephemeral: true}))
			fams := gather(t, f.s)
			for _, name := range []string{"groups", "workspaces"} {
				for _, m := range fams[name].Metric {
					if _, ok := labelValue(m, "scope"); !ok {
						t.Errorf("%s series without scope: %v", name, labelMap(m))
					}
				}
			}
			if got := gaugeOf(t, fams["groups"], map[string]string{"ephemeral": "1", "scope": "kali"}); got != 1 {
				t.Errorf("groups{kali}: %v", got)
			}
		}},
		{"work_requests: task data reaches labels only for Worker tasks, and only host_architecture and backend", func(t *testing.T, f *farm) {
			debian := f.scope("debian")
			ws := f.workspace(debian, "private", false, 0)
			f.submit(model.TaskWorker, "sbuild", ws, nil, nil, map[string]any{"host_architecture": "amd64", "source": "secret-package"})
			f.submit(model.TaskServer, "apt-mirror", ws, nil, nil, map[string]any{"host_architecture": "amd64", "backend": "x"})
			fams := gather(t, f.s)
			for _, m := range fams["work_requests"].Metric {
				l := labelMap(m)
				for k, v := range l {
					if strings.Contains(v, "secret") {
						t.Errorf("task data leaked: %s=%q", k, v)
					}
				}
				_, hasArch := l["host_architecture"]
				if (l["task_type"] == "Worker") != hasArch {
					t.Errorf("host_architecture on the wrong series: %v", l)
				}
			}
			if got := gaugeOf(t, fams["work_requests"], map[string]string{"task_type": "Worker", "task_name": "sbuild", "scope": "debian",
				"status": "pending", "host_architecture": "amd64", "backend": "auto"}); got != 1 {
				t.Errorf("pending sbuild: %v", got)
			}
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			testdb.Each(t, func(t *testing.T, dsn string) {
				clk := &testClock{t: farmNow}
				s := openStore(t, dsn, clk)
				sc.run(t, &farm{t: t, ctx: context.Background(), s: s, clk: clk})
			})
		})
	}
}

// TestServiceStatusAgrees checks every figure of the JSON service status
// against sums over the metrics served from the same cache, on the golden
// farm on both databases.
func TestServiceStatusAgrees(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		clk := &testClock{}
		s := openStore(t, dsn, clk)
		buildGoldenFarm(t, s, clk)
		e := New(s, Options{CacheTTL: time.Minute, Now: clk.Now})
		st := fetchStatus(t, e.ServiceStatus())
		text := parseText(t, scrapeHTTP(t, e, acceptText).Body.Bytes())
		checkStatusAgrees(t, st, text)

		want := ServiceStatus{
			Tasks: map[string]TaskCounts{
				"Worker": {Pending: 3, Running: 1}, "Server": {Pending: 1}, "Workflow": {Running: 7},
				"Wait": {Pending: 1}, "Internal": {}, "Signing": {},
			},
			WorkerTasksByArchitecture: map[string]TaskCounts{"amd64": {Pending: 1, Running: 1}, "hurd-i386": {Pending: 1},
				"arm64": {Pending: 1}, "i386": {}},
			Workers: map[string]WorkerCounts{
				"external": {Registered: 4, Connected: 3, Idle: 2, Busy: 1}, "server": {Registered: 1, Connected: 1, Idle: 1}, "signing": {},
			},
			WorkersByArchitecture: map[string]WorkerCounts{
				"amd64": {Registered: 2, Connected: 2, Idle: 1, Busy: 1}, "i386": {Registered: 1, Connected: 1, Busy: 1},
				"hurd-i386": {Registered: 1, Connected: 1, Idle: 1}, "arm64": {Registered: 1}, "armhf": {Registered: 1}, "s390x": {},
			},
			WorkersByHostArchitecture: map[string]WorkerCounts{
				"amd64": {Registered: 2, Connected: 2, Idle: 1, Busy: 1}, "hurd-i386": {Registered: 1, Connected: 1, Idle: 1},
				"arm64": {Registered: 1}, "s390x": {},
			},
		}
		for name, pair := range map[string][2]any{
			"tasks":                        {st.Tasks, want.Tasks},
			"worker_tasks_by_architecture": {st.WorkerTasksByArchitecture, want.WorkerTasksByArchitecture},
			"workers":                      {st.Workers, want.Workers},
			"workers_by_architecture":      {st.WorkersByArchitecture, want.WorkersByArchitecture},
			"workers_by_host_architecture": {st.WorkersByHostArchitecture, want.WorkersByHostArchitecture},
		} {
			got, _ := json.Marshal(pair[0])
			w, _ := json.Marshal(pair[1])
			if string(got) != string(w) {
				t.Errorf("%s:\n got %s\nwant %s", name, got, w)
			}
		}
		if !st.SnapshotAt.Equal(farmNow) {
			t.Errorf("snapshot_at %v, want %v", st.SnapshotAt, farmNow)
		}
	})
}

// fetchStatus requests the service status and decodes it strictly.
func fetchStatus(t *testing.T, h http.Handler) *ServiceStatus {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/1.0/service-status/", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("service-status: %d %q: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	var st ServiceStatus
	if err := dec.Decode(&st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// checkStatusAgrees recomputes every figure of st from the metrics as a
// scraper parsed them, independently of the code that computed st.
func checkStatusAgrees(t *testing.T, st *ServiceStatus, ex exposition) {
	t.Helper()
	wr, workers := ex.fams["work_requests"], ex.fams["workers"]
	tasks := func(match map[string]string) TaskCounts {
		pending, running := copyLabels(match), copyLabels(match)
		pending["status"], running["status"] = "pending", "running"
		return TaskCounts{Pending: int64(sum(wr, pending)), Running: int64(sum(wr, running))}
	}
	workerCountsOf := func(workers *dto.MetricFamily, match map[string]string) WorkerCounts {
		with := func(k, v string) map[string]string { m := copyLabels(match); m[k] = v; return m }
		idle := with("connected", "1")
		idle["busy"] = "0"
		return WorkerCounts{Registered: int64(sum(workers, match)), Connected: int64(sum(workers, with("connected", "1"))),
			Idle: int64(sum(workers, idle)), Busy: int64(sum(workers, with("busy", "1")))}
	}
	workerCounts := func(match map[string]string) WorkerCounts { return workerCountsOf(workers, match) }
	for tt, got := range st.Tasks {
		if want := tasks(map[string]string{"task_type": tt}); got != want {
			t.Errorf("tasks[%s] = %+v, metrics say %+v", tt, got, want)
		}
	}
	for arch, got := range st.WorkerTasksByArchitecture {
		if want := tasks(map[string]string{"task_type": "Worker", "host_architecture": arch}); got != want {
			t.Errorf("worker_tasks_by_architecture[%s] = %+v, metrics say %+v", arch, got, want)
		}
	}
	for wt, got := range st.Workers {
		if want := workerCounts(map[string]string{"worker_type": wt}); got != want {
			t.Errorf("workers[%s] = %+v, metrics say %+v", wt, got, want)
		}
	}
	for arch, got := range st.WorkersByArchitecture {
		if want := workerCounts(map[string]string{"worker_type": "external", ArchitectureLabel(arch): "1"}); got != want {
			t.Errorf("workers_by_architecture[%s] = %+v, workers says %+v", arch, got, want)
		}
		byArch := ex.fams["external_workers_by_architecture"]
		if want := workerCountsOf(byArch, map[string]string{"architecture": arch}); got != want {
			t.Errorf("workers_by_architecture[%s] = %+v, external_workers_by_architecture says %+v", arch, got, want)
		}
	}
	if byArch := ex.fams["external_workers_by_architecture"]; byArch != nil {
		for _, m := range byArch.Metric {
			if a := labelMap(m)["architecture"]; st.WorkersByArchitecture[a] == (WorkerCounts{}) && m.GetGauge().GetValue() != 0 {
				t.Errorf("architecture %q missing from workers_by_architecture", a)
			}
		}
	}
	for arch, got := range st.WorkersByHostArchitecture {
		if want := workerCounts(map[string]string{"worker_type": "external", "host_architecture": arch}); got != want {
			t.Errorf("workers_by_host_architecture[%s] = %+v, metrics say %+v", arch, got, want)
		}
	}
	// nothing the metrics know is missing from the status
	if wr != nil {
		for _, m := range wr.Metric {
			l := labelMap(m)
			if _, ok := st.Tasks[l["task_type"]]; !ok {
				t.Errorf("task type %q missing from the status", l["task_type"])
			}
			if _, ok := st.WorkerTasksByArchitecture[l["host_architecture"]]; l["task_type"] == "Worker" && !ok {
				t.Errorf("architecture %q missing from worker_tasks_by_architecture", l["host_architecture"])
			}
		}
	}
	if workers != nil {
		for _, m := range workers.Metric {
			l := labelMap(m)
			if _, ok := st.Workers[l["worker_type"]]; !ok {
				t.Errorf("worker type %q missing from the status", l["worker_type"])
			}
			if _, ok := st.WorkersByHostArchitecture[l["host_architecture"]]; l["worker_type"] == "external" && !ok {
				t.Errorf("host architecture %q missing from the status", l["host_architecture"])
			}
		}
	}
}
