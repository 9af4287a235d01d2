package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestConcurrentSetting: the runner reports its --concurrent in its
// metadata and its capacity gauges (1 when unset), and refuses a value
// out of range, or above 1 with --once, naming the settings.
func TestConcurrentSetting(t *testing.T) {
	for _, c := range []struct {
		n    int
		once bool
		want int
		err  string
	}{
		{n: 0, want: 1},
		{n: 1, once: true, want: 1},
		{n: 8, want: 8},
		{n: 256, want: 256},
		{n: -1, err: "--concurrent: -1"},
		{n: 257, err: "--concurrent: 257"},
		{n: 3, once: true, err: "--once runs one task"},
	} {
		m, err := newMetrics()
		if err != nil {
			t.Fatal(err)
		}
		r, err := newRunner(context.Background(), Config{Server: "http://127.0.0.1:1", Token: "kiln_not_used", Name: "c",
			WorkDir: t.TempDir(), Concurrent: c.n, Once: c.once}, m)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("concurrent %d, once %v: error %v, want one saying %q", c.n, c.once, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("concurrent %d: %v", c.n, err)
		}
		if r.meta.Concurrent != c.want || r.meta.Capacity() != c.want {
			t.Errorf("concurrent %d: metadata says %d (capacity %d), want %d", c.n, r.meta.Concurrent, r.meta.Capacity(), c.want)
		}
		for name, g := range map[string]float64{"concurrent": testutil.ToFloat64(m.concurrent), "limit": testutil.ToFloat64(m.limit)} {
			if g != float64(c.want) {
				t.Errorf("concurrent %d: kiln_runner_%s = %v, want %d", c.n, name, g, c.want)
			}
		}
	}
}

// TestConcurrentRunnerInProcess runs a runner with concurrent 3 in this
// process (so that the race detector watches its jobs): six tasks, in
// two rounds of three that each wait until the three of their round have
// started, all succeed with kiln_runner_jobs at 3 while they run; then
// SIGTERM while it holds three long tasks hands all three back after the
// grace period.
func TestConcurrentRunnerInProcess(t *testing.T) {
	f := startFarm(t)
	arch := Metadata(context.Background(), nil, "").HostArchitecture
	m, err := newMetrics()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := newRunner(ctx, Config{Server: f.url, Token: f.workerToken("triple"), Name: "triple", WorkDir: t.TempDir(),
		Architectures: []string{arch}, HostArchitecture: arch, Concurrent: 3, ShutdownGrace: 300 * time.Millisecond}, m)
	if err != nil {
		t.Fatal(err)
	}
	var serveErr error
	stopped := make(chan struct{})
	go func() { defer close(stopped); serveErr = r.serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-stopped
	})
	marks := t.TempDir()
	var ids []int64
	for i := range 6 {
		round := filepath.Join(marks, fmt.Sprint(i/3))
		if err := os.MkdirAll(round, 0o755); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, f.submit(map[string]any{"host_architecture": arch, "backend": "host",
			"script": fmt.Sprintf(`touch %[1]s/$KILN_WORK_REQUEST; n=0
while [ $(ls %[1]s | wc -l) -lt 3 ]; do sleep 0.02; n=$((n+1)); [ $n -gt 1000 ] && exit 1; done; sleep 0.2`, round)}))
	}
	seen3 := false
	until(t, 60*time.Second, "six tasks to complete", func() bool {
		if slices.Equal(jobSeries(t, m.reg), []string{"running_script/running=3"}) {
			seen3 = true
		}
		for _, id := range ids {
			if st, _ := f.status(id); st != "completed" {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		if _, res := f.status(id); res != "success" {
			t.Errorf("request %d: %s", id, res)
		}
	}
	if !seen3 {
		t.Error("kiln_runner_jobs never showed three tasks running at once")
	}
	if v := testutil.ToFloat64(m.finished.WithLabelValues("command", "success")); v != 6 {
		t.Errorf("jobs finished{command,success} = %v, want 6", v)
	}

	var long []int64
	for range 3 {
		long = append(long, f.submit(map[string]any{"host_architecture": arch, "backend": "host", "script": "sleep 60"}))
	}
	until(t, 20*time.Second, "three long tasks to run", func() bool {
		return slices.Equal(jobSeries(t, m.reg), []string{"running_script/running=3"})
	})
	cancel()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("the runner did not stop")
	}
	if serveErr != nil {
		t.Fatal(serveErr)
	}
	if v := testutil.ToFloat64(m.finished.WithLabelValues("command", "handed_back")); v != 3 {
		t.Errorf("jobs finished{command,handed_back} = %v, want 3", v)
	}
	for _, id := range long {
		if st, _ := f.status(id); st != "pending" {
			t.Errorf("handed-back request %d is %s, want pending", id, st)
		}
	}
}
