package localrunners

import (
	"bytes"
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

// TestChildInheritsNothing: a child gets the server's environment without
// any KILN_ variable but its token, and its settings as explicit flags.
func TestChildInheritsNothing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "seen")
	t.Setenv("LOCALRUNNERS_TEST_OUT", out)
	t.Setenv("KILN_METRICS_SERVER", "127.0.0.1:9252")
	t.Setenv("KILN_CONFIG", "/etc/kiln/server.toml")
	t.Setenv("KILN_DATA_DIR", "/var/lib/kiln")
	s, err := Start(Config{
		Command: shell(`env > "$LOCALRUNNERS_TEST_OUT.env"; printf '%s\n' "$@" > "$LOCALRUNNERS_TEST_OUT.args"; exec sleep 60`),
		Server:  "http://127.0.0.1:8420", Dir: t.TempDir(), ShutdownGrace: 5 * time.Second,
	}, []Runner{{Name: "local-1", Token: "kiln_secret", MetricsServer: "127.0.0.1:9300"}})
	if err != nil {
		t.Fatal(err)
	}
	until(t, "the child to write what it saw", func() bool {
		b, _ := os.ReadFile(out + ".args")
		return bytes.HasSuffix(b, []byte("127.0.0.1:9300\n"))
	})
	start := time.Now()
	s.Stop(10 * time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %s: the child ignored SIGTERM?", d)
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
	if !strings.Contains(string(env), "LOCALRUNNERS_TEST_OUT=") {
		t.Error("the child lost the rest of the environment")
	}
	args, _ := os.ReadFile(out + ".args")
	got := strings.Fields(string(args))
	want := []string{"--server", "http://127.0.0.1:8420", "--name", "local-1", "--work-dir", "",
		"--shutdown-grace", "5s", "--metrics-server", "127.0.0.1:9300"}
	if len(got) != len(want) {
		t.Fatalf("flags %v, want %v", got, want)
	}
	for i := range want {
		if want[i] != "" && got[i] != want[i] {
			t.Errorf("flag %d: %q, want %q (all: %v)", i, got[i], want[i], got)
		}
	}
	if !strings.HasSuffix(got[5], "/local-1") {
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
			s, err := Start(Config{
				Command: shell(c.script), Server: "http://127.0.0.1:1", Dir: dir, StableAfter: c.stableAfter,
				NewBackOff: func() backoff.BackOff {
					return &backoff.ExponentialBackOff{InitialInterval: 20 * time.Millisecond, Multiplier: 2, MaxInterval: time.Second}
				},
				Logger: slog.New(slog.NewJSONHandler(logs, nil)), Registerer: reg,
			}, []Runner{{Name: "local-1", Token: "t"}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Stop(5 * time.Second)
			const exitMsg = "local runner exited; starting it again after a pause"
			until(t, "three exits", func() bool { return len(logs.records(exitMsg)) >= 3 })
			s.Stop(5 * time.Second)

			exits := logs.records(exitMsg)
			for i, want := range c.wantWaits {
				r := exits[i]
				if r["restart_in"] != want || r["status"] != "exit status 1" || r["level"] != "ERROR" || r["worker"] != "local-1" ||
					!strings.HasPrefix(r["last_log_line"].(string), "kiln: ") || r["log"] != filepath.Join(dir, "local-1.log") {
					t.Errorf("exit %d logged as %v; want restart_in %s, the status and the last log line", i, r, want)
				}
			}
			if n := len(logs.records("local runner started")); n < 3 || n > len(exits)+1 {
				t.Errorf("%d starts for %d exits", n, len(exits))
			}
			if v := testutil.ToFloat64(s.exits); int(v) != len(exits) {
				t.Errorf("kiln_local_runner_exits_total = %v, want %d", v, len(exits))
			}
			if v := testutil.ToFloat64(s.running); v != 0 {
				t.Errorf("kiln_local_runners_running = %v after Stop", v)
			}
			if n, _ := testutil.GatherAndCount(reg, "kiln_local_runners"); n != 1 {
				t.Error("kiln_local_runners not registered")
			}
			if problems, _ := testutil.GatherAndLint(reg); len(problems) > 0 {
				t.Errorf("lint: %v", problems)
			}
		})
	}
}

// TestStopKillsAChildThatIgnoresSIGTERM: Stop does not wait for ever.
func TestStopKillsAChildThatIgnoresSIGTERM(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	t.Setenv("LOCALRUNNERS_TEST_READY", ready)
	s, err := Start(Config{Command: shell(`trap '' TERM; touch "$LOCALRUNNERS_TEST_READY"; while true; do sleep 0.05; done`),
		Server: "http://127.0.0.1:1", Dir: t.TempDir()}, []Runner{{Name: "stubborn", Token: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	until(t, "the child to start", func() bool { _, err := os.Stat(ready); return err == nil })
	start := time.Now()
	s.Stop(300 * time.Millisecond)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %s", d)
	}
}
