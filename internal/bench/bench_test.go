package bench

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/seed"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestReferenceQueries: the reference design's four queries run on kiln's
// schema, on both databases.
func TestReferenceQueries(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		st, err := store.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		qs, err := referenceQueries(st.Dialect())
		if err != nil {
			t.Fatal(err)
		}
		if d, err := runReference(context.Background(), st.DB(), qs); err != nil || d <= 0 {
			t.Fatalf("%v, %v", d, err)
		}
	})
}

// TestRun measures two tiny SQLite farms end to end: seeding, the
// reference queries, scrapes, and the table.
func TestRun(t *testing.T) {
	tiny := seed.Sizes{Scopes: 2, WorkspacesEach: 2, Users: 10, Workers: 10, WorkRequests: 100, Artifacts: 50, FilesPerArtifact: 2}
	larger := tiny
	larger.WorkRequests, larger.Artifacts = 300, 150
	var log bytes.Buffer
	rs, err := Run(context.Background(), Config{SQLiteDir: t.TempDir(), Small: tiny, Large: larger, Runs: 1, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(rs) != 2 || rs[0].Series == 0 || rs[1].Reference <= 0 || rs[1].Scrape <= 0 || rs[1].Allocated <= 0 {
		t.Fatalf("results %+v", rs)
	}
	var table bytes.Buffer
	Table(&table, rs)
	if !strings.Contains(table.String(), "| sqlite | large | 300 | 150 | 300 |") || !strings.Contains(table.String(), "sqlite: the uncached scrape grows") {
		t.Errorf("table:\n%s", table.String())
	}
}

// TestLoad: the load generator counts answers and failures.
func TestLoad(t *testing.T) {
	ok := httptest.NewServer(ServeBytes([]byte("plain body"), []byte("gzip body"), "text/plain"))
	defer ok.Close()
	for _, gzip := range []bool{true, false} {
		s := load(context.Background(), ok.URL, 4, gzip, 200*time.Millisecond)
		if s.requests == 0 || s.errors != 0 || len(s.latencies) != s.requests || s.rps() <= 0 {
			t.Errorf("gzip %v: %d requests, %d errors (%v)", gzip, s.requests, s.errors, s.firstErr)
		}
	}
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	s := load(context.Background(), failing.URL, 2, true, 100*time.Millisecond)
	if s.requests != 0 || s.errors == 0 || s.firstErr == nil || !strings.Contains(s.firstErr.Error(), "503") {
		t.Errorf("a failing server: %d requests, %d errors (%v)", s.requests, s.errors, s.firstErr)
	}
}

// TestProcessCPU: the CPU time read from /proc follows what getrusage
// says this process used.
func TestProcessCPU(t *testing.T) {
	pid := os.Getpid()
	before, rusage := processCPUOf(pid), processCPU()
	for deadline := time.Now().Add(time.Minute); processCPU()-rusage < 100*time.Millisecond && time.Now().Before(deadline); {
	}
	used := processCPU() - rusage
	if got := processCPUOf(pid) - before; got < used-30*time.Millisecond || got > used+30*time.Millisecond {
		t.Errorf("/proc says %s of CPU time, getrusage %s", got, used)
	}
}
