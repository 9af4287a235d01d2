package bench

// Wake-up latency across replicas: how long a request submitted through
// one `kiln server` replica waits before an idle runner connected to
// another replica of the same PostgreSQL database starts it. Before
// package signal, that runner learned of the request at its session's
// next look at the queue (every ClaimInterval, 1 s); now a NOTIFY wakes
// it. A baseline build is measured the same way, interleaved.

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/kiln-build/kiln/internal/client"
)

// WakeupConfig says what bench-wakeup measures.
type WakeupConfig struct {
	// Postgres is a PostgreSQL server URL whose user may create
	// databases; the benchmark (re)creates kiln_bench_wakeup_* there.
	// Replicas need PostgreSQL: it is required.
	Postgres string
	// Kiln is the kiln binary started as servers and runner; default the
	// running executable.
	Kiln string
	// Baseline, when set, is another kiln binary (a build from before
	// the signals, say) measured the same way on a database of its own,
	// its samples interleaved with Kiln's.
	Baseline string
	// Samples is the number of requests measured per build; default 200.
	Samples int
	// MaxPause bounds the random pause before each submission (uniform
	// in [0, MaxPause)), so that submissions fall anywhere in a polling
	// runner's interval; default 1 s, the default ClaimInterval.
	MaxPause time.Duration
	// Log receives progress; may be nil.
	Log io.Writer
}

// WakeupResult is what bench-wakeup measured.
type WakeupResult struct {
	Started               time.Time
	LoadBefore, LoadAfter float64
	Rows                  []WakeupRow
}

// WakeupRow is one build's samples.
type WakeupRow struct {
	Build string // "kiln", or "baseline"
	// Wake is, per request, from the commit of its submission on replica
	// A (created_at) to its claim for the runner connected to replica B
	// (started_at); Client from just before the client sent the
	// submission to the claim.
	Wake, Client []time.Duration
}

// wakeFarm is one build's pair of replicas and its runner.
type wakeFarm struct {
	build     string
	dir       string
	postgres  string // the server, and the database's name on it
	database  string
	a, b      *kilnServer
	runner    *exec.Cmd
	api       *client.Client
	workspace int64
}

// RunWakeup runs the wake-up benchmark.
func RunWakeup(ctx context.Context, cfg WakeupConfig) (*WakeupResult, error) {
	if cfg.Postgres == "" {
		return nil, fmt.Errorf("bench-wakeup needs PostgreSQL (--postgres): replicas share one")
	}
	if cfg.Samples <= 0 {
		cfg.Samples = 200
	}
	if cfg.MaxPause <= 0 {
		cfg.MaxPause = time.Second
	}
	if cfg.Kiln == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Kiln = exe
	}
	logf := lineLogger(cfg.Log)
	tmp, err := os.MkdirTemp("", "kiln-bench-wakeup-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	res := &WakeupResult{Started: time.Now(), LoadBefore: loadAverage()}

	builds := [][2]string{{"kiln", cfg.Kiln}}
	if cfg.Baseline != "" {
		builds = append(builds, [2]string{"baseline", cfg.Baseline})
	}
	var farms []*wakeFarm
	defer func() {
		for _, f := range farms {
			f.close()
		}
	}()
	for _, b := range builds {
		f := &wakeFarm{build: b[0], dir: filepath.Join(tmp, b[0])}
		farms = append(farms, f)
		if err := f.start(ctx, b[1], cfg.Postgres); err != nil {
			return nil, fmt.Errorf("%s: %w", b[0], err)
		}
		logf("%s: replicas %s and %s, a runner on the second", f.build, f.a.api, f.b.api)
	}
	rows := make([]WakeupRow, len(farms))
	for i, f := range farms {
		rows[i].Build = f.build
	}
	for n := range cfg.Samples {
		for i, f := range farms {
			select {
			case <-time.After(rand.N(cfg.MaxPause)):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			wake, cl, err := f.sample(ctx)
			if err != nil {
				return nil, fmt.Errorf("%s, sample %d: %w", f.build, n+1, err)
			}
			rows[i].Wake = append(rows[i].Wake, wake)
			rows[i].Client = append(rows[i].Client, cl)
		}
		if (n+1)%50 == 0 {
			logf("%d samples per build", n+1)
		}
	}
	res.Rows = rows
	res.LoadAfter = loadAverage()
	return res, nil
}

// start creates the build's database, starts replica A (which migrates
// and bootstraps it), replica B, and a runner connected to B only.
func (f *wakeFarm) start(ctx context.Context, kiln, postgres string) error {
	for _, d := range []string{"a", "b", "runner"} {
		if err := os.MkdirAll(filepath.Join(f.dir, d), 0o750); err != nil {
			return err
		}
	}
	f.postgres, f.database = postgres, "kiln_bench_wakeup_"+f.build
	dsn, err := recreateDatabase(ctx, postgres, f.database)
	if err != nil {
		return err
	}
	admin := "kiln_bench_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if f.a, err = startKilnServer(ctx, kiln, filepath.Join(f.dir, "a"), dsn, admin, "server.log"); err != nil {
		return err
	}
	if f.b, err = startKilnServer(ctx, kiln, filepath.Join(f.dir, "b"), dsn, admin, "server.log"); err != nil {
		return err
	}
	if f.api, err = client.New(f.a.api, admin); err != nil {
		return err
	}
	var scope, ws struct{ ID int64 }
	if err := f.api.Do(ctx, http.MethodPost, "/api/1.0/scopes/", map[string]any{"name": "bench"}, &scope); err != nil {
		return err
	}
	if err := f.api.Do(ctx, http.MethodPost, "/api/1.0/workspaces/", map[string]any{"name": "wakeup", "scope": scope.ID, "public": true}, &ws); err != nil {
		return err
	}
	f.workspace = ws.ID
	var w struct {
		Token struct{ Secret string }
	}
	if err := f.api.Do(ctx, http.MethodPost, "/api/1.0/workers/", map[string]any{"name": "bench-runner-on-b"}, &w); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(f.dir, "runner", "runner.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	f.runner = exec.Command(kiln, "runner", "--server", f.b.api, "--name", "bench-runner-on-b",
		"--work-dir", filepath.Join(f.dir, "runner"), "--architectures", benchArch, "--host-architecture", benchArch)
	f.runner.Env = append(cleanEnv(), "KILN_TOKEN="+w.Token.Secret)
	f.runner.Stdout, f.runner.Stderr = logFile, logFile
	f.runner.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := f.runner.Start(); err != nil {
		return err
	}
	// one request first: the runner is connected and idle afterwards
	if _, _, err := f.sample(ctx); err != nil {
		return fmt.Errorf("first request: %w (see %s)", err, f.dir)
	}
	return nil
}

// sample submits a noop through replica A, waits until it has completed
// on the runner of replica B, and returns its wake-up latencies.
func (f *wakeFarm) sample(ctx context.Context) (wake, fromClient time.Duration, err error) {
	var wr struct {
		ID        int64      `json:"id"`
		Status    string     `json:"status"`
		CreatedAt time.Time  `json:"created_at"`
		StartedAt *time.Time `json:"started_at"`
	}
	sent := time.Now()
	if err := f.api.Do(ctx, http.MethodPost, "/api/1.0/work-requests/", map[string]any{"task_type": "Worker", "task_name": "noop",
		"workspace": f.workspace, "task_data": map[string]string{"host_architecture": benchArch}}, &wr); err != nil {
		return 0, 0, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for wr.Status != "completed" {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("request %d still %s after 30 s", wr.ID, wr.Status)
		}
		time.Sleep(2 * time.Millisecond)
		if err := f.api.Do(ctx, http.MethodGet, fmt.Sprintf("/api/1.0/work-requests/%d/", wr.ID), nil, &wr); err != nil {
			return 0, 0, err
		}
	}
	if wr.StartedAt == nil {
		return 0, 0, fmt.Errorf("request %d completed without a start", wr.ID)
	}
	return wr.StartedAt.Sub(wr.CreatedAt), wr.StartedAt.Sub(sent), nil
}

func (f *wakeFarm) close() {
	for _, c := range []*exec.Cmd{f.runner} {
		if c != nil && c.Process != nil {
			stopProcess(c, 15*time.Second)
		}
	}
	for _, s := range []*kilnServer{f.b, f.a} {
		if s != nil {
			stopProcess(s.cmd, 15*time.Second)
		}
	}
	if f.database != "" {
		if admin, err := sql.Open("pgx", f.postgres); err == nil {
			admin.Exec("DROP DATABASE IF EXISTS " + f.database + " WITH (FORCE)")
			admin.Close()
		}
	}
}

// durationQuantile is the q-quantile of ds (nearest rank).
func durationQuantile(ds []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// WakeupTable renders a result as the Markdown of docs/benchmarks.md.
func WakeupTable(w io.Writer, r *WakeupResult) {
	fmt.Fprintf(w, "Load average (1 min): %.1f before, %.1f after. Started %s.\n\n", r.LoadBefore, r.LoadAfter,
		r.Started.UTC().Format(time.RFC3339))
	fmt.Fprintln(w, "| build | measured from | samples | p50 | p90 | p99 | max |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|")
	for _, row := range r.Rows {
		for _, m := range []struct {
			name string
			ds   []time.Duration
		}{{"submission committed on A", row.Wake}, {"client sends to A", row.Client}} {
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s |\n", row.Build, m.name, len(m.ds),
				ms(durationQuantile(m.ds, .5)), ms(durationQuantile(m.ds, .9)), ms(durationQuantile(m.ds, .99)), ms(durationQuantile(m.ds, 1)))
		}
	}
	if len(r.Rows) == 2 {
		k, b := r.Rows[0], r.Rows[1]
		fmt.Fprintf(w, "\n%s ÷ %s, from the commit on A: p50 %.3f×, p99 %.3f×.\n", b.Build, k.Build,
			float64(durationQuantile(b.Wake, .5))/float64(durationQuantile(k.Wake, .5)), float64(durationQuantile(b.Wake, .99))/float64(durationQuantile(k.Wake, .99)))
	}
}
