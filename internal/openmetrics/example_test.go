package openmetrics_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/kiln-build/kiln/internal/openmetrics"
	"github.com/kiln-build/kiln/internal/store"
)

func ExampleArchitectureLabel() {
	for _, arch := range []string{"amd64", "hurd-i386", "kfreebsd-amd64"} {
		fmt.Println(openmetrics.ArchitectureLabel(arch))
	}
	// Output:
	// architecture_amd64
	// architecture_hurd_i386
	// architecture_kfreebsd_amd64
}

// staticSource serves one fixed snapshot; in kiln the source is the
// *store.SQL of the server.
type staticSource struct{ snap *store.Snapshot }

func (s staticSource) Snapshot(context.Context) (*store.Snapshot, error) { return s.snap, nil }

func ExampleNewHandler() {
	snap := &store.Snapshot{
		Taken:      time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		ScopeNames: map[int64]string{1: "debian"},
		Totals: []store.Total{
			{Family: "work_requests", Value: 2, Labels: store.Labels{"task_type": "Worker", "task_name": "sbuild", "scope_id": "1",
				"status": "pending", "host_architecture": "amd64", "backend": "unshare"}},
			{Family: "work_requests", Value: 1, Labels: store.Labels{"task_type": "Workflow", "task_name": "sbuild", "scope_id": "1", "status": "running"}},
			{Family: "workers", Value: 1, Labels: store.Labels{"connected": "1", "busy": "1", "worker_type": "external",
				"architectures": "amd64,i386", "host_architecture": "amd64"}},
			{Family: "workers", Value: 1, Labels: store.Labels{"connected": "1", "busy": "0", "worker_type": "server"}},
		},
	}
	h := openmetrics.NewHandler(staticSource{snap}, openmetrics.Options{CacheTTL: openmetrics.DefaultCacheTTL})

	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/1.0/open-metrics/", nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	h.ServeHTTP(rec, req)
	fmt.Println(rec.Header().Get("Content-Type"))
	fmt.Print(rec.Body)
	// Output:
	// application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores
	// # HELP external_workers_by_architecture Number of external workers that support each architecture, by architecture, connected (1/0) and busy (1/0); a worker counts under every architecture it supports. Unlike the architecture_<arch> labels of workers, a new architecture adds series without changing the others.
	// # TYPE external_workers_by_architecture gauge
	// external_workers_by_architecture{architecture="amd64",busy="1",connected="1"} 1.0
	// external_workers_by_architecture{architecture="i386",busy="1",connected="1"} 1.0
	// # HELP tokens_last_seen Seconds since each enabled token was last used (to the minute); tokens never used are not observed.
	// # TYPE tokens_last_seen histogram
	// tokens_last_seen_bucket{le="60.0"} 0
	// tokens_last_seen_bucket{le="3600.0"} 0
	// tokens_last_seen_bucket{le="86400.0"} 0
	// tokens_last_seen_bucket{le="604800.0"} 0
	// tokens_last_seen_bucket{le="2.592e+06"} 0
	// tokens_last_seen_bucket{le="7.776e+06"} 0
	// tokens_last_seen_bucket{le="3.1536e+07"} 0
	// tokens_last_seen_bucket{le="+Inf"} 0
	// tokens_last_seen_sum 0.0
	// tokens_last_seen_count 0
	// # HELP work_requests Number of work requests, by task_type, task_name, scope and status; Worker tasks also by host_architecture and backend from their task data.
	// # TYPE work_requests gauge
	// work_requests{backend="unshare",host_architecture="amd64",scope="debian",status="pending",task_name="sbuild",task_type="Worker"} 2.0
	// work_requests{scope="debian",status="running",task_name="sbuild",task_type="Workflow"} 1.0
	// # HELP workers Number of workers, by connected (1/0), busy (1/0), worker_type; pool workers by worker_pool; external workers by host_architecture and architecture_<arch> (1 if supported, else 0) for every architecture known to external workers.
	// # TYPE workers gauge
	// workers{architecture_amd64="1",architecture_i386="1",busy="1",connected="1",host_architecture="amd64",worker_type="external"} 1.0
	// workers{busy="0",connected="1",worker_type="server"} 1.0
	// # EOF
}

func ExampleStatusOf() {
	snap := &store.Snapshot{
		Taken: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Totals: []store.Total{
			{Family: "workers", Value: 2, Labels: store.Labels{"connected": "1", "busy": "0", "worker_type": "external",
				"architectures": "hurd-i386", "host_architecture": "hurd-i386"}},
		},
	}
	st, err := openmetrics.StatusOf(snap)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%+v\n", st.WorkersByArchitecture["hurd-i386"])
	// Output:
	// {Registered:2 Connected:2 Idle:2 Busy:0}
}
