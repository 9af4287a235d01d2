package pool

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kiln-build/kiln/internal/model"
)

func TestMetricsAddresses(t *testing.T) {
	for _, c := range []struct {
		base    string
		n       int
		want    []string
		wantErr string
	}{
		{"127.0.0.1:9300", 3, []string{"127.0.0.1:9300", "127.0.0.1:9301", "127.0.0.1:9302"}, ""},
		{"[::1]:9300", 1, []string{"[::1]:9300"}, ""},
		{":65535", 1, []string{":65535"}, ""},
		{":65535", 2, nil, "past port 65535"},
		{"127.0.0.1:0", 1, nil, "port 0 is not allowed"},
	} {
		got, err := MetricsAddresses(c.base, c.n)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("MetricsAddresses(%q, %d): %v, want an error with %q", c.base, c.n, err, c.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("MetricsAddresses(%q, %d) = %v, %v; want %v", c.base, c.n, got, err, c.want)
		}
	}
}

// logBuffer collects JSON log records written from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the records whose msg is msg.
func (b *logBuffer) records(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(b.buf.String(), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shell runs script with sh as a child, the runner's flags in "$@".
func shell(script string) []string { return []string{"/bin/sh", "-c", script, "sh"} }

// processPool is a process pool for the provider tests.
func processPool(name, settings string) *model.WorkerPool {
	if settings == "" {
		settings = "{}"
	}
	return &model.WorkerPool{Name: name, Provider: model.ProviderProcess, Settings: json.RawMessage(settings),
		Architectures: []string{"amd64", "i386"}, MaxInstances: 3}
}

func create(t *testing.T, p *Process, pool *model.WorkerPool, name, worker string, slot int) {
	t.Helper()
	if _, err := p.Create(context.Background(), CreateRequest{Pool: pool, ServerURL: "http://127.0.0.1:8420", Token: "kiln_secret",
		Instance: Instance{Name: name, Worker: worker, Slot: slot}}); err != nil {
		t.Fatal(err)
	}
}

// TestChildInheritsNothing: a child gets the server's environment without
// any KILN_ variable but its token, and its settings as explicit flags —
// the pool's concurrent and its slot's metrics listener among them.
func TestChildInheritsNothing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "seen")
	t.Setenv("POOL_TEST_OUT", out)
	t.Setenv("KILN_METRICS_SERVER", "127.0.0.1:9252")
	t.Setenv("KILN_CONFIG", "/etc/kiln/server.toml")
	t.Setenv("KILN_DATA_DIR", "/var/lib/kiln")
	p, err := NewProcess(ProcessConfig{
		Command: shell(`env > "$POOL_TEST_OUT.env"; printf '%s\n' "$@" > "$POOL_TEST_OUT.args"; exec sleep 60`),
		Dir:     t.TempDir(), ShutdownGrace: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	pool := processPool("local", `{"metrics_server": "127.0.0.1:9300"}`)
	pool.Concurrent = 4
	create(t, p, pool, "local-7", "local-2", 2)
	until(t, "the child to write what it saw", func() bool {
		b, _ := os.ReadFile(out + ".args")
		return bytes.HasSuffix(b, []byte("127.0.0.1:9301\n"))
	})
	if l, _ := p.List(context.Background(), pool); len(l) != 1 || l[0].Name != "local-7" {
		t.Errorf("List: %v", l)
	}
	start := time.Now()
	if err := p.Destroy(context.Background(), pool, Instance{Name: "local-7"}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Destroy took %s: the child ignored SIGTERM?", d)
	}
	if l, _ := p.List(context.Background(), pool); len(l) != 0 {
		t.Errorf("List after Destroy: %v", l)
	}

	env, _ := os.ReadFile(out + ".env")
	var kiln []string
	for _, kv := range strings.Split(string(env), "\n") {
		if strings.HasPrefix(kv, "KILN_") {
			kiln = append(kiln, kv)
		}
	}
	if !slices.Equal(kiln, []string{"KILN_TOKEN=kiln_secret"}) {
		t.Errorf("the child's KILN_ variables: %v, want only its token", kiln)
	}
	if !strings.Contains(string(env), "POOL_TEST_OUT=") {
		t.Error("the child lost the rest of the environment")
	}
	args, _ := os.ReadFile(out + ".args")
	got := strings.Fields(string(args))
	want := []string{"--server", "http://127.0.0.1:8420", "--name", "local-2", "--work-dir", "",
		"--architectures", "amd64,i386", "--concurrent", "4", "--shutdown-grace", "5s", "--metrics-server", "127.0.0.1:9301"}
	if len(got) != len(want) {
		t.Fatalf("flags %v, want %v", got, want)
	}
	for i := range want {
		if want[i] != "" && got[i] != want[i] {
			t.Errorf("flag %d: %q, want %q (all: %v)", i, got[i], want[i], got)
		}
	}
	if !strings.HasSuffix(got[5], "/local-2") {
		t.Errorf("work dir %q", got[5])
	}
}

// TestCrashingChildIsLoggedAndRestartedWithBackoff: a child that exits at
// once is logged with its status and last log line, counted, and started
// again after waits that grow; one that ran long enough starts from the
// shortest wait again.
func TestCrashingChildIsLoggedAndRestartedWithBackoff(t *testing.T) {
	for _, c := range []struct {
		name        string
		script      string
		stableAfter time.Duration
		wantWaits   []string
	}{
		{"crash loop", `echo "kiln: --metrics-server: listen tcp 127.0.0.1:9252: bind: address already in use" >&2; exit 1`,
			time.Hour, []string{"20ms", "40ms", "80ms"}},
		{"ran long enough", `sleep 0.1; echo "kiln: the server refused the runner's token" >&2; exit 1`,
			50 * time.Millisecond, []string{"20ms", "20ms", "20ms"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			logs := &logBuffer{}
			reg := prometheus.NewPedanticRegistry()
			dir := t.TempDir()
			p, err := NewProcess(ProcessConfig{
				Command: shell(c.script), Dir: dir, StableAfter: c.stableAfter,
				NewBackOff: func() backoff.BackOff {
					return &backoff.ExponentialBackOff{InitialInterval: 20 * time.Millisecond, Multiplier: 2, MaxInterval: time.Second}
				},
				Logger: slog.New(slog.NewJSONHandler(logs, nil)), Registerer: reg,
			})
			if err != nil {
				t.Fatal(err)
			}
			create(t, p, processPool("local", ""), "local-1", "local-1", 1)
			defer p.StopAll(5 * time.Second)
			const exitMsg = "pool runner exited; starting it again after a pause"
			until(t, "three exits", func() bool { return len(logs.records(exitMsg)) >= 3 })
			if got := p.StopAll(5 * time.Second); !slices.Equal(got, []string{"local-1"}) {
				t.Errorf("StopAll stopped %v", got)
			}

			exits := logs.records(exitMsg)
			for i, want := range c.wantWaits {
				r := exits[i]
				if r["restart_in"] != want || r["status"] != "exit status 1" || r["level"] != "ERROR" || r["worker"] != "local-1" ||
					r["worker_pool"] != "local" || !strings.HasPrefix(r["last_log_line"].(string), "kiln: ") ||
					r["log"] != filepath.Join(dir, "local-1.log") {
					t.Errorf("exit %d logged as %v; want restart_in %s, the status and the last log line", i, r, want)
				}
			}
			if n := len(logs.records("pool runner started")); n < 3 || n > len(exits)+1 {
				t.Errorf("%d starts for %d exits", n, len(exits))
			}
			if v := testutil.ToFloat64(p.exits.WithLabelValues("local")); int(v) != len(exits) {
				t.Errorf("kiln_pool_process_exits_total = %v, want %d", v, len(exits))
			}
			if v := testutil.ToFloat64(p.running.WithLabelValues("local")); v != 0 {
				t.Errorf("kiln_pool_processes = %v after StopAll", v)
			}
			if problems, _ := testutil.GatherAndLint(reg); len(problems) > 0 {
				t.Errorf("lint: %v", problems)
			}
		})
	}
}

// TestStopKillsAChildThatIgnoresSIGTERM: a destroy does not wait for
// ever.
func TestStopKillsAChildThatIgnoresSIGTERM(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	t.Setenv("POOL_TEST_READY", ready)
	p, err := NewProcess(ProcessConfig{Command: shell(`trap '' TERM; touch "$POOL_TEST_READY"; while true; do sleep 0.05; done`),
		Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	pool := processPool("local", "")
	create(t, p, pool, "stubborn-1", "stubborn-1", 1)
	until(t, "the child to start", func() bool { _, err := os.Stat(ready); return err == nil })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	p.Destroy(ctx, pool, Instance{Name: "stubborn-1"})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Destroy took %s", d)
	}
}

// TestCreateFailsWhenTheRunnerCannotStart: a missing command is the
// create's failure, not a crash loop.
func TestCreateFailsWhenTheRunnerCannotStart(t *testing.T) {
	p, err := NewProcess(ProcessConfig{Command: []string{filepath.Join(t.TempDir(), "no-kiln"), "runner"}, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	pool := processPool("local", "")
	_, err = p.Create(context.Background(), CreateRequest{Pool: pool, Instance: Instance{Name: "local-1", Worker: "local-1", Slot: 1}})
	if err == nil || !strings.Contains(err.Error(), "no-kiln") {
		t.Fatalf("create with a missing command: %v", err)
	}
	if l, _ := p.List(context.Background(), pool); len(l) != 0 {
		t.Errorf("a failed create is listed: %v", l)
	}
}
