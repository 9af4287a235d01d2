package report_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kiln-build/kiln/internal/report"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
	"github.com/kiln-build/kiln/internal/testkit"
	"github.com/kiln-build/kiln/internal/testpeers"
)

// recording is a target that counts who wrote what, in front of a real
// one.
type recording struct {
	report.Target
	who string

	mu     *sync.Mutex
	writes *[]string
}

func (r recording) Write(ctx context.Context, doc []byte, at time.Time) (string, error) {
	where, err := r.Target.Write(ctx, doc, at)
	if err == nil {
		r.mu.Lock()
		*r.writes = append(*r.writes, r.who)
		r.mu.Unlock()
	}
	return where, err
}

// runScheduler runs a schedule until the test ends.
func runScheduler(t *testing.T, st report.ScheduleStore, sch report.Schedule, reg prometheus.Registerer) {
	t.Helper()
	s, err := report.NewScheduler(st, sch, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestTwoSchedulersOneReportPerInterval: two replicas' schedulers on one
// PostgreSQL database, each with its own connection pool, write one
// report per interval between them — never two — and record each.
func TestTwoSchedulersOneReportPerInterval(t *testing.T) {
	dsn := testdb.Postgres(t)
	a, b := farm(t, dsn), openAgain(t, dsn)
	file, err := report.ParseTarget(t.TempDir() + "/farm.json")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var writes []string
	start := time.Now().Truncate(time.Second)
	regs := map[string]*prometheus.Registry{}
	for who, st := range map[string]*store.SQL{"a": a, "b": b} {
		regs[who] = prometheus.NewRegistry()
		runScheduler(t, st, report.Schedule{Interval: time.Second, Owner: who, Logger: discard(),
			Target: recording{Target: file, who: who, mu: &mu, writes: &writes}}, regs[who])
	}
	var runs []store.ReportRun
	eventually(t, 15*time.Second, "3 intervals with their report", func() bool {
		runs, err = a.ReportRuns(context.Background(), start)
		done := 0
		for _, r := range runs {
			if r.FinishedAt != nil {
				done++
			}
		}
		return err == nil && done >= 3
	})
	mu.Lock()
	defer mu.Unlock()
	finished := 0
	for _, r := range runs {
		if r.FinishedAt != nil {
			finished++
		}
		if r.Claims != 1 {
			t.Errorf("interval %s was claimed %d times", r.Slot, r.Claims)
		}
	}
	// a report may be written, not yet recorded; never written twice
	if len(writes) < finished || len(writes) > finished+1 {
		t.Errorf("%d reports written for %d intervals recorded: %v", len(writes), finished, writes)
	}
	var successes float64
	for _, reg := range regs {
		successes += counter(t, reg, "kiln_report_attempts_total", "success")
	}
	if int(successes) != len(writes) {
		t.Errorf("the schedulers count %v successes, %d reports were written", successes, len(writes))
	}
	t.Logf("%d intervals, written by %v", finished, writes)
}

// TestSchedulerRetriesS3Faults: while S3 fails, each attempt fails, is
// counted and retried with backoff, and latest.json stays the previous
// report; once S3 answers again, the interval's report is written and
// recorded. On SQLite, the one-machine database.
func TestSchedulerRetriesS3Faults(t *testing.T) {
	st := farm(t, testdb.SQLite(t))
	tg, s3, proxy := s3Target(t, "&max_attempts=1")
	previous := []byte(`{"schema_version": 1}`)
	if _, err := tg.Write(context.Background(), previous, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	proxy.Set(testpeers.Fault{Status: 503})
	reg := prometheus.NewRegistry()
	logs := &testkit.Buffer{}
	// a long interval: this one interval's report is retried, by the
	// holder of the claim for 4s, then by whoever claims it next
	runScheduler(t, st, report.Schedule{Interval: time.Hour, Lease: 4 * time.Second, Target: tg,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}, reg)
	eventually(t, 20*time.Second, "three failed attempts", func() bool {
		return counter(t, reg, "kiln_report_attempts_total", "failure") >= 3
	})
	if got := s3.Get(t, "reports/farm/latest.json"); !bytes.Equal(got, previous) {
		t.Fatalf("latest.json changed while S3 failed: %.60q", got)
	}
	if counter(t, reg, "kiln_report_attempts_total", "success") != 0 {
		t.Fatal("a success counted while S3 failed")
	}
	proxy.Set(testpeers.Fault{})
	eventually(t, 20*time.Second, "the report once S3 is back", func() bool {
		return counter(t, reg, "kiln_report_attempts_total", "success") == 1
	})
	latest := s3.Get(t, "reports/farm/latest.json")
	validate(t, latest)
	runs, err := st.ReportRuns(context.Background(), time.Now().Add(-2*time.Hour))
	if err != nil || len(runs) != 1 || runs[0].FinishedAt == nil {
		t.Fatalf("runs: %+v %v", runs, err)
	}
	if !bytes.Contains([]byte(logs.String()), []byte("writing the report failed; retrying")) ||
		!bytes.Contains([]byte(logs.String()), []byte("SlowDown")) {
		t.Errorf("the log does not say what failed:\n%s", logs)
	}
	if v := gauge(t, reg, "kiln_report_last_success_timestamp_seconds"); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success %v", v)
	}
	if v := gauge(t, reg, "kiln_report_interval_seconds"); v != 3600 {
		t.Errorf("kiln_report_interval_seconds is %v for an hourly schedule", v)
	}
}

func openAgain(t *testing.T, dsn string) *store.SQL {
	t.Helper()
	st, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// counter reads a counter of reg by its outcome label.
func counter(t *testing.T, reg *prometheus.Registry, name, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	n, err := testutil.GatherAndCount(reg, name)
	if err != nil || n != 1 {
		t.Fatalf("%s: %d series, %v", name, n, err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.Metric[0].GetGauge().GetValue()
		}
	}
	return 0
}

// eventually polls cond until it holds, or fails the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
