package bench

// Claiming throughput: how many noop work requests a real `kiln server`
// and real `kiln runner` processes complete per second, next to what the
// same database does for pgbench in the same run, and how much a backlog
// of requests nobody can run slows claiming down.

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	prommodel "github.com/prometheus/common/model"

	"github.com/kiln-build/kiln/internal/client"
	"github.com/kiln-build/kiln/internal/config"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// ClaimsConfig says what bench-claims measures.
type ClaimsConfig struct {
	// Postgres is a PostgreSQL server URL whose user may create
	// databases; the benchmark (re)creates kiln_bench_claims_* and
	// kiln_bench_pgbench there. Empty means SQLite files in a temporary
	// directory (and no pgbench).
	Postgres string
	// Kiln is the kiln binary started as server and runners; default the
	// running executable.
	Kiln string
	// Baseline, when set, is another kiln binary (an older build, say)
	// measured the same way on databases of its own, its trials
	// interleaved with Kiln's, so that the table compares the two in one
	// run.
	Baseline string
	// Runners are the runner counts measured; default 1, 4, 8.
	Runners []int
	// Backlog is the number of pending requests for an architecture no
	// runner has in the second queue; default 200,000. 0 skips it.
	Backlog int
	// Window is how long each trial counts completions; default 6 s.
	Window time.Duration
	// Rounds is how many times every trial runs (the figures are
	// medians); default 3.
	Rounds int
	// Pgbench is the pgbench command; default "pgbench".
	Pgbench string
	// ProfileDir, when set, receives CPU profiles of the server and of one
	// runner taken during an extra trial with the most runners (not
	// counted in the medians).
	ProfileDir string
	// Log receives a line per trial; may be nil.
	Log io.Writer
}

// ClaimsResult is what bench-claims measured.
type ClaimsResult struct {
	Database string
	// PgbenchTPS is the median TPS of `pgbench -N -c 8 -j 2 -T 8` (0 on
	// SQLite).
	PgbenchTPS float64
	Rows       []ClaimsRow
	Started    time.Time
	// LoadBefore and LoadAfter are the 1-minute load averages.
	LoadBefore, LoadAfter float64
}

// ClaimsRow is one kind of trial: a build, a queue and a number of
// runners.
type ClaimsRow struct {
	Build   string // "kiln", or "baseline" for ClaimsConfig.Baseline
	Queue   string // "empty" or "backlog"
	Backlog int
	Runners int
	// Rate is the median of noop completions per second.
	Rate float64
	// ServerCPU and RunnerCPU are the medians of CPU time per completed
	// request (user + system, runners summed).
	ServerCPU, RunnerCPU time.Duration
	// DatabaseCPU is the median of the CPU time per completed request of
	// the PostgreSQL processes serving the farm's database (0 on SQLite,
	// whose work is the server's own).
	DatabaseCPU time.Duration
	Rates       []float64
}

// unmatchedArch is the architecture of the backlog: no runner of the
// benchmark has it.
const unmatchedArch = "mips64el"

// benchArch is what the benchmark's runners and noops use.
const benchArch = "amd64"

// RunClaims runs the claiming benchmark.
func RunClaims(ctx context.Context, cfg ClaimsConfig) (*ClaimsResult, error) {
	if len(cfg.Runners) == 0 {
		cfg.Runners = []int{1, 4, 8}
	}
	if cfg.Window <= 0 {
		cfg.Window = 6 * time.Second
	}
	if cfg.Rounds < 1 {
		cfg.Rounds = 3
	}
	if cfg.Pgbench == "" {
		cfg.Pgbench = "pgbench"
	}
	if cfg.Kiln == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Kiln = exe
	}
	logf := lineLogger(cfg.Log)
	maxRunners := 0
	for _, n := range cfg.Runners {
		maxRunners = max(maxRunners, n)
	}
	tmp, err := os.MkdirTemp("", "kiln-bench-claims-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	res := &ClaimsResult{Database: string(store.SQLite), Started: time.Now(), LoadBefore: loadAverage()}
	var pgbenchURL string
	if cfg.Postgres != "" {
		res.Database = string(store.Postgres)
		if pgbenchURL, err = recreateDatabase(ctx, cfg.Postgres, "kiln_bench_pgbench"); err != nil {
			return nil, err
		}
		logf("pgbench -i -s 10 into kiln_bench_pgbench")
		if out, err := exec.CommandContext(ctx, cfg.Pgbench, "-i", "-s", "10", "-q", pgbenchURL).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("pgbench -i: %v\n%s", err, out)
		}
	}

	type build struct{ name, bin string }
	builds := []build{{"kiln", cfg.Kiln}}
	if cfg.Baseline != "" {
		builds = append(builds, build{"baseline", cfg.Baseline})
	}
	queues := []struct {
		name    string
		backlog int
	}{{"empty", 0}}
	if cfg.Backlog > 0 {
		queues = append(queues, struct {
			name    string
			backlog int
		}{"backlog", cfg.Backlog})
	}
	var farms []*claimFarm
	defer func() {
		for _, f := range farms {
			f.close()
		}
	}()
	for _, q := range queues {
		for _, b := range builds {
			name := q.name
			if len(builds) > 1 {
				name = b.name + "_" + q.name
			}
			f := &claimFarm{name: name, build: b.name, queue: q.name, backlog: q.backlog, dir: filepath.Join(tmp, name), kiln: b.bin, log: logf}
			farms = append(farms, f)
			if err := f.prepare(ctx, cfg.Postgres, maxRunners); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
	}

	type trialKey struct {
		farm    int
		runners int
	}
	rows := map[trialKey]*ClaimsRow{}
	serverCPU := map[trialKey][]time.Duration{}
	runnerCPU := map[trialKey][]time.Duration{}
	databaseCPU := map[trialKey][]time.Duration{}
	var tps []float64
	for round := 1; round <= cfg.Rounds; round++ {
		if pgbenchURL != "" {
			v, err := runPgbench(ctx, cfg.Pgbench, pgbenchURL)
			if err != nil {
				return nil, err
			}
			logf("round %d: pgbench -N -c 8 -j 2 -T 8: %.0f TPS", round, v)
			tps = append(tps, v)
		}
		for fi, f := range farms {
			for _, n := range cfg.Runners {
				t, err := f.trial(ctx, n, cfg.Window, "")
				if err != nil {
					return nil, fmt.Errorf("%s queue, %d runners: %w", f.name, n, err)
				}
				logf("round %d: %s, %d runners: %.0f noops/s, CPU per noop: server %s, runners %s, database %s", round, f.name, n,
					t.rate, t.serverCPU.Round(time.Microsecond), t.runnerCPU.Round(time.Microsecond), t.databaseCPU.Round(time.Microsecond))
				k := trialKey{fi, n}
				if rows[k] == nil {
					rows[k] = &ClaimsRow{Build: f.build, Queue: f.queue, Backlog: f.backlog, Runners: n}
				}
				rows[k].Rates = append(rows[k].Rates, t.rate)
				serverCPU[k] = append(serverCPU[k], t.serverCPU)
				runnerCPU[k] = append(runnerCPU[k], t.runnerCPU)
				databaseCPU[k] = append(databaseCPU[k], t.databaseCPU)
			}
		}
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o750); err != nil {
			return nil, err
		}
		logf("profiling the server and one runner: %s, %d runners", farms[0].name, maxRunners)
		if _, err := farms[0].trial(ctx, maxRunners, cfg.Window, cfg.ProfileDir); err != nil {
			return nil, fmt.Errorf("profiling: %w", err)
		}
	}
	if len(tps) > 0 {
		res.PgbenchTPS = medianFloat(tps)
	}
	for fi := range farms {
		for _, n := range cfg.Runners {
			k := trialKey{fi, n}
			r := rows[k]
			r.Rate = medianFloat(r.Rates)
			r.ServerCPU, r.RunnerCPU, r.DatabaseCPU = median(serverCPU[k]), median(runnerCPU[k]), median(databaseCPU[k])
			res.Rows = append(res.Rows, *r)
		}
	}
	res.LoadAfter = loadAverage()
	return res, nil
}

// claimFarm is one database with its kiln server. The benchmark treats
// the kiln binary as a black box — its server migrates and bootstraps the
// database, the API creates everything, its own `metrics recount` fixes
// the totals after the bulk-loaded backlog — so that a baseline binary of
// another version is measured on the schema and code of its own.
type claimFarm struct {
	name    string // build and queue
	build   string
	queue   string
	backlog int
	dir     string
	kiln    string
	log     func(string, ...any)

	dsn       string
	api       *client.Client
	workspace int64
	tokens    []string
	server    *exec.Cmd
	// db measures the CPU of PostgreSQL's processes on the farm's
	// database; nil on SQLite
	db      *cpuMeter
	apiURL  string
	metrics string
	// submitted counts the noops submitted so far; est is the last
	// measured rate per runner count, to size the next trial's queue.
	submitted int64
	est       map[int]float64
}

// prepare creates the database, starts the server on it (which migrates
// and bootstraps it), creates the workers and the backlog.
func (f *claimFarm) prepare(ctx context.Context, postgres string, runners int) error {
	if err := os.MkdirAll(f.dir, 0o750); err != nil {
		return err
	}
	f.dsn = filepath.Join(f.dir, "kiln.db")
	if postgres != "" {
		var err error
		if f.dsn, err = recreateDatabase(ctx, postgres, "kiln_bench_claims_"+f.name); err != nil {
			return err
		}
		if f.db, err = newServerMeter(ctx, f.dsn); err != nil {
			return err
		}
	}
	admin := "kiln_bench_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := f.startServer(ctx, admin); err != nil {
		return err
	}
	var err error
	if f.api, err = client.New(f.apiURL, admin); err != nil {
		return err
	}
	var scope struct{ ID int64 }
	if err := f.api.Do(ctx, http.MethodPost, "/api/1.0/scopes/", map[string]any{"name": "bench"}, &scope); err != nil {
		return err
	}
	mkWorkspace := func(name string) (int64, error) {
		var ws struct{ ID int64 }
		err := f.api.Do(ctx, http.MethodPost, "/api/1.0/workspaces/", map[string]any{"name": name, "scope": scope.ID, "public": true}, &ws)
		return ws.ID, err
	}
	if f.workspace, err = mkWorkspace("claims"); err != nil {
		return err
	}
	for i := 1; i <= runners; i++ {
		var w struct {
			Token struct{ Secret string }
		}
		if err := f.api.Do(ctx, http.MethodPost, "/api/1.0/workers/", map[string]any{"name": fmt.Sprintf("bench-runner-%d", i)}, &w); err != nil {
			return err
		}
		f.tokens = append(f.tokens, w.Token.Secret)
	}
	if f.backlog > 0 {
		ws, err := mkWorkspace("backlog")
		if err != nil {
			return err
		}
		f.log("%s: adding %d pending requests for %s", f.name, f.backlog, unmatchedArch)
		if err := f.addBacklog(ctx, ws); err != nil {
			return err
		}
	}
	return nil
}

// addBacklog bulk-inserts pending noop requests for unmatchedArch, older
// than anything the trials submit, then has the farm's kiln rebuild the
// running totals.
func (f *claimFarm) addBacklog(ctx context.Context, workspace int64) error {
	driver, dsn := "pgx", f.dsn
	q := `INSERT INTO work_requests (task_type, task_name, workspace_id, status, result, data, priority, created_at, step_name, retries, max_retries)
		SELECT 'Worker', 'noop', $1, 'pending', '', $2, 0, $3::bigint + g, '', 0, 3 FROM generate_series(1, $4::int) AS g`
	analyze := "VACUUM ANALYZE work_requests"
	if !strings.HasPrefix(dsn, "postgres") {
		driver, dsn = "sqlite", "file:"+dsn+"?_pragma=busy_timeout(10000)"
		q = `WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $4)
		INSERT INTO work_requests (task_type, task_name, workspace_id, status, result, data, priority, created_at, step_name, retries, max_retries)
		SELECT 'Worker', 'noop', $1, 'pending', '', $2, 0, $3 + g, '', 0, 3 FROM s`
		analyze = "ANALYZE"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	created := time.Now().Add(-time.Hour).UnixMicro()
	if _, err := db.ExecContext(ctx, q, workspace, `{"host_architecture": "`+unmatchedArch+`"}`, created, f.backlog); err != nil {
		return fmt.Errorf("adding the backlog: %w", err)
	}
	if _, err := db.ExecContext(ctx, analyze); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, f.kiln, "metrics", "recount", "--fix", "--database", f.dsn).CombinedOutput(); err != nil {
		return fmt.Errorf("kiln metrics recount --fix: %v\n%s", err, out)
	}
	return nil
}

var listening = regexp.MustCompile(`^kiln server listening on (\S+)`)
var internalMetrics = regexp.MustCompile(`^Internal metrics on (\S+)/metrics`)

func (f *claimFarm) startServer(ctx context.Context, admin string) error {
	srv, err := startKilnServer(ctx, f.kiln, f.dir, f.dsn, admin, "server.log")
	if err != nil {
		return err
	}
	f.server, f.apiURL, f.metrics = srv.cmd, srv.api, srv.metrics
	return nil
}

// kilnServer is a `kiln server` process a benchmark started.
type kilnServer struct {
	cmd          *exec.Cmd
	api, metrics string // base URLs of the API and the internal listener
}

// startKilnServer starts kiln's server on database dsn with data directory
// dir (its log in dir/logName), bootstrapping it with the admin token
// admin, and waits until it listens.
func startKilnServer(ctx context.Context, kiln, dir, dsn, admin, logName string) (*kilnServer, error) {
	logf, err := os.Create(filepath.Join(dir, logName))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(kiln, "server", "--listen", "127.0.0.1:0", "--metrics-server", "127.0.0.1:"+freePort(),
		"--data-dir", dir, "--database", dsn)
	cmd.Env = append(cleanEnv(), "KILN_BOOTSTRAP_TOKEN="+admin)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	srv := &kilnServer{cmd: cmd}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	timeout := time.After(60 * time.Second)
	for srv.api == "" || srv.metrics == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				return nil, fmt.Errorf("the server exited; see %s", logf.Name())
			}
			if m := listening.FindStringSubmatch(line); m != nil {
				srv.api = m[1]
			}
			if m := internalMetrics.FindStringSubmatch(line); m != nil {
				srv.metrics = m[1]
			}
		case <-timeout:
			stopProcess(cmd, time.Second)
			return nil, fmt.Errorf("the server did not start within a minute; see %s", logf.Name())
		case <-ctx.Done():
			stopProcess(cmd, time.Second)
			return nil, ctx.Err()
		}
	}
	return srv, nil
}

func (f *claimFarm) close() {
	if f == nil {
		return
	}
	if f.server != nil && f.server.Process != nil {
		stopProcess(f.server, 15*time.Second)
	}
	if f.db != nil {
		f.db.db.Close()
	}
}

// trialResult is one measurement.
type trialResult struct {
	rate                              float64
	serverCPU, runnerCPU, databaseCPU time.Duration
}

// errQueueDry is a trial whose queue emptied before its window ended: its
// rate says how fast the runners could have gone no more than a lower bound.
var errQueueDry = errors.New("the queue ran dry during the window")

// trial measures n runners (trialOnce). A trial whose queue ran dry — the
// farm went faster than the estimate it was filled for — is run again
// with the queue filled for the rate it reached, twice at most.
func (f *claimFarm) trial(ctx context.Context, n int, window time.Duration, profileDir string) (*trialResult, error) {
	for attempt := 1; ; attempt++ {
		t, err := f.trialOnce(ctx, n, window, profileDir)
		if !errors.Is(err, errQueueDry) || attempt == 3 {
			return t, err
		}
	}
}

// trialOnce starts n runners on a queue holding enough noops for the
// window, counts completions over the window once all of them are
// connected, and stops them. With profileDir set it also takes CPU
// profiles.
func (f *claimFarm) trialOnce(ctx context.Context, n int, window time.Duration, profileDir string) (*trialResult, error) {
	if f.est == nil {
		f.est = map[int]float64{}
	}
	est := f.est[n]
	if est == 0 {
		// no trial with n runners yet: the fastest rate seen, or a guess
		est = 400
		for _, r := range f.est {
			est = max(est, r)
		}
	}
	// enough for runner start-up, the window and a wide margin
	need := int64(est*(window.Seconds()+4)*2) + 100
	done, err := f.completed(ctx)
	if err != nil {
		return nil, err
	}
	if left := f.submitted - done; left < need {
		if err := f.submit(ctx, need-left); err != nil {
			return nil, err
		}
	}

	runners := make([]*exec.Cmd, n)
	defer func() {
		var wg sync.WaitGroup
		for _, r := range runners {
			if r != nil && r.Process != nil {
				wg.Add(1)
				go func() { defer wg.Done(); stopProcess(r, 15*time.Second) }()
			}
		}
		wg.Wait()
	}()
	runnerMetrics := ""
	for i := range n {
		args := []string{"runner", "--server", f.apiURL, "--name", fmt.Sprintf("bench-runner-%d", i+1),
			"--work-dir", filepath.Join(f.dir, fmt.Sprintf("runner-%d", i+1)),
			"--architectures", benchArch, "--host-architecture", benchArch, "--shutdown-grace", "10s"}
		if profileDir != "" && i == 0 {
			runnerMetrics = "127.0.0.1:" + freePort()
			args = append(args, "--metrics-server", runnerMetrics)
		}
		logf, err := os.OpenFile(filepath.Join(f.dir, fmt.Sprintf("runner-%d.log", i+1)), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(f.kiln, args...)
		cmd.Env = append(cleanEnv(), "KILN_TOKEN="+f.tokens[i])
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		err = cmd.Start()
		logf.Close()
		if err != nil {
			return nil, err
		}
		runners[i] = cmd
	}
	if err := f.awaitConnected(ctx, n); err != nil {
		return nil, err
	}

	pids := []int{f.server.Process.Pid}
	for _, r := range runners {
		pids = append(pids, r.Process.Pid)
	}
	cpu0, err := cpuTimes(pids)
	if err != nil {
		return nil, err
	}
	db0 := f.db.read(ctx)
	c0, err := f.completed(ctx)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	var profiles sync.WaitGroup
	var profileErr atomic.Value
	if profileDir != "" {
		for name, addr := range map[string]string{"server": f.metrics, "runner": "http://" + runnerMetrics} {
			profiles.Add(1)
			go func() {
				defer profiles.Done()
				if err := fetchProfile(ctx, addr, window, filepath.Join(profileDir, name+".pprof")); err != nil {
					profileErr.Store(err)
				}
			}()
		}
	}
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c1, err := f.completed(ctx)
	if err != nil {
		return nil, err
	}
	cpu1, err := cpuTimes(pids)
	if err != nil {
		return nil, err
	}
	dbCPU := f.db.serverSince(ctx, db0)
	elapsed := time.Since(t0)
	profiles.Wait()
	if err, ok := profileErr.Load().(error); ok {
		return nil, err
	}
	count := c1 - c0
	if f.submitted-c1 < int64(n) {
		f.est[n] = max(est, float64(count)/elapsed.Seconds()) * 2
		return nil, fmt.Errorf("%w (%d submitted, %d completed): the trial was too short to mean anything", errQueueDry, f.submitted, c1)
	}
	if count <= 0 {
		return nil, fmt.Errorf("no request completed in %s; see the logs in %s", window, f.dir)
	}
	t := &trialResult{rate: float64(count) / elapsed.Seconds()}
	t.serverCPU = (cpu1[0] - cpu0[0]) / time.Duration(count)
	var runnersCPU time.Duration
	for i := 1; i < len(pids); i++ {
		runnersCPU += cpu1[i] - cpu0[i]
	}
	t.runnerCPU = runnersCPU / time.Duration(count)
	t.databaseCPU = dbCPU / time.Duration(count)
	f.est[n] = t.rate
	return t, nil
}

// submit adds n noop requests through the API, from 8 concurrent
// clients.
func (f *claimFarm) submit(ctx context.Context, n int64) error {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	body := map[string]any{"task_type": "Worker", "task_name": "noop", "workspace": f.workspace,
		"task_data": map[string]string{"host_architecture": benchArch}}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= n && ctx.Err() == nil {
				if err := f.api.Do(ctx, http.MethodPost, "/api/1.0/work-requests/", body, nil); err != nil {
					firstErr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return fmt.Errorf("submitting noops: %w", err)
	}
	f.submitted += n
	return ctx.Err()
}

// awaitConnected waits until the first n benchmark workers are connected.
func (f *claimFarm) awaitConnected(ctx context.Context, n int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var page struct {
			Results []struct {
				Name        string     `json:"name"`
				ConnectedAt *time.Time `json:"connected_at"`
			} `json:"results"`
		}
		if err := f.api.Do(ctx, http.MethodGet, "/api/1.0/workers/?worker_type=external&limit=1000", nil, &page); err != nil {
			return err
		}
		c := 0
		for _, w := range page.Results {
			var i int
			if _, err := fmt.Sscanf(w.Name, "bench-runner-%d", &i); err == nil && i <= n && w.ConnectedAt != nil {
				c++
			}
		}
		if c == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d runners connected within a minute; see the logs in %s", c, n, f.dir)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// completed reads, from the server's own metrics, how many Worker
// requests it has completed since it started: a counter kept in memory,
// so counting costs the database nothing.
func (f *claimFarm) completed(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.metrics+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(prommodel.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("reading the server's metrics: %w", err)
	}
	var n float64
	if fam := fams["kiln_scheduler_results_total"]; fam != nil {
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "task_type" && l.GetValue() == string(model.TaskWorker) {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return int64(n), nil
}

// fetchProfile saves a CPU profile of the process behind a metrics
// listener (its /debug/pprof/).
func fetchProfile(ctx context.Context, base string, d time.Duration, path string) error {
	secs := max(1, int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile from %s: %s", base, resp.Status)
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// clockTick is the unit of /proc/<pid>/stat's times: USER_HZ, 100 on
// every Linux architecture kiln builds for.
const clockTick = 10 * time.Millisecond

// cpuTimes reads user + system CPU time of each process.
func cpuTimes(pids []int) ([]time.Duration, error) {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil, fmt.Errorf("CPU time of process %d: %w", pid, err)
		}
		// fields after the command name, which may hold spaces: state is
		// field 3, utime 14, stime 15
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) < 13 {
			return nil, fmt.Errorf("CPU time of process %d: short /proc/%d/stat", pid, pid)
		}
		utime, err1 := strconv.ParseInt(fields[11], 10, 64)
		stime, err2 := strconv.ParseInt(fields[12], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("CPU time of process %d: %w", pid, err)
		}
		out[i] = time.Duration(utime+stime) * clockTick
	}
	return out, nil
}

var pgbenchTPS = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)

func runPgbench(ctx context.Context, pgbench, url string) (float64, error) {
	out, err := exec.CommandContext(ctx, pgbench, "-N", "-c", "8", "-j", "2", "-T", "8", url).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	m := pgbenchTPS.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench printed no TPS:\n%s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// recreateDatabase drops database name on server if it exists, creates it
// empty and returns its URL.
func recreateDatabase(ctx context.Context, server, name string) (string, error) {
	u, _, err := ensureDatabase(ctx, server, name, true)
	return u, err
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "0"
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// cleanEnv is this process's environment without KILN_ settings, which
// would reconfigure the server and runners the benchmark starts.
func cleanEnv() []string { return config.WithoutKilnSettings(os.Environ()) }

// stopProcess sends SIGTERM and waits, then SIGKILL.
func stopProcess(cmd *exec.Cmd, timeout time.Duration) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
	}
}

func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return v
}

func medianFloat(vs []float64) float64 {
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// ClaimsTable renders a result as the Markdown of docs/benchmarks.md.
func ClaimsTable(w io.Writer, r *ClaimsResult) {
	fmt.Fprintf(w, "Database: %s. Load average (1 min): %.1f before, %.1f after. Started %s.\n\n", r.Database, r.LoadBefore, r.LoadAfter,
		r.Started.UTC().Format(time.RFC3339))
	if r.PgbenchTPS > 0 {
		fmt.Fprintf(w, "pgbench -N -c 8 -j 2 -T 8 (median): %.0f TPS\n\n", r.PgbenchTPS)
	}
	fmt.Fprintln(w, "| build | queue | runners | noops/s (median) | runs | vs pgbench TPS | CPU per noop: server | runners | total | database |")
	fmt.Fprintln(w, "|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
	row := map[string]ClaimsRow{}
	var builds []string
	for _, c := range r.Rows {
		queue := "empty"
		if c.Backlog > 0 {
			queue = fmt.Sprintf("%dk unmatched pending", c.Backlog/1000)
		}
		vs := "–"
		if r.PgbenchTPS > 0 {
			vs = fmt.Sprintf("%.1f %%", 100*c.Rate/r.PgbenchTPS)
		}
		runs := make([]string, len(c.Rates))
		for i, v := range c.Rates {
			runs[i] = fmt.Sprintf("%.0f", v)
		}
		db := "–"
		if c.DatabaseCPU > 0 {
			db = ms(c.DatabaseCPU)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %s |\n", c.Build, queue, c.Runners, c.Rate, strings.Join(runs, ", "), vs,
			ms(c.ServerCPU), ms(c.RunnerCPU), ms(c.ServerCPU+c.RunnerCPU), db)
		if !slices.Contains(builds, c.Build) {
			builds = append(builds, c.Build)
		}
		row[fmt.Sprintf("%s/%s/%d", c.Build, c.Queue, c.Runners)] = c
	}
	fmt.Fprintln(w)
	for _, b := range builds {
		var ns []int
		for _, c := range r.Rows {
			if c.Build == b && c.Queue == "empty" {
				ns = append(ns, c.Runners)
			}
		}
		for i := 1; i < len(ns); i++ {
			x, y := row[fmt.Sprintf("%s/empty/%d", b, ns[i-1])], row[fmt.Sprintf("%s/empty/%d", b, ns[i])]
			fmt.Fprintf(w, "%s: scaling %d → %d runners: %.2f×.\n", b, x.Runners, y.Runners, y.Rate/x.Rate)
			x, ok1 := row[fmt.Sprintf("%s/backlog/%d", b, ns[i-1])]
			y, ok2 := row[fmt.Sprintf("%s/backlog/%d", b, ns[i])]
			if ok1 && ok2 {
				fmt.Fprintf(w, "%s: scaling %d → %d runners behind the backlog: %.2f×.\n", b, x.Runners, y.Runners, y.Rate/x.Rate)
			}
		}
		for _, n := range ns {
			e, ok1 := row[fmt.Sprintf("%s/empty/%d", b, n)]
			bl, ok2 := row[fmt.Sprintf("%s/backlog/%d", b, n)]
			if ok1 && ok2 {
				fmt.Fprintf(w, "%s: backlog slowdown with %d runners (empty ÷ backlog throughput): %.2f×.\n", b, n, e.Rate/bl.Rate)
			}
		}
	}
	if len(builds) == 2 {
		for _, c := range r.Rows {
			if c.Build != builds[0] {
				continue
			}
			if base, ok := row[fmt.Sprintf("%s/%s/%d", builds[1], c.Queue, c.Runners)]; ok {
				fmt.Fprintf(w, "%s ÷ %s, %s queue, %d runners: throughput %.2f×, CPU per noop %.2f×.\n", builds[0], builds[1], c.Queue, c.Runners,
					c.Rate/base.Rate, float64(c.ServerCPU+c.RunnerCPU)/float64(base.ServerCPU+base.RunnerCPU))
			}
		}
	}
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}
