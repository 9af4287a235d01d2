// Package runner is `kiln runner`: it connects to a kiln server, says what
// it can run, takes up to Config.Concurrent work requests at a time, runs
// each (package tasks) in a working directory of its own, streams its log,
// uploads what it produced and reports its result.
//
// The connection is a WebSocket speaking package protocol; the package
// comment of internal/scheduler argues that choice. In short: connected or
// not is a fact the server needs, and a socket gives it exactly, along with
// heartbeats, the log stream, results and cancellation on one channel.
//
// Robustness rules the runner keeps:
//   - Each request the runner holds is a job of its own, from the task
//     message to the server's ack of its result: its own working
//     directory, log, uploads, stage and cancellation. Jobs share only the
//     connection; the runner asks for more work while it holds fewer than
//     Concurrent.
//   - A task outlives its connection. When the connection drops the tasks
//     go on; the runner reconnects with exponential backoff and jitter,
//     says in hello which requests it still holds, and delivers their
//     results when it can. The log is streamed from each task's log file,
//     so nothing written while disconnected is lost from the live log
//     either.
//   - If the server did not keep a request across the reconnection (the
//     heartbeat timeout passed and it went to another runner), the runner
//     stops it at once and reports nothing: a request never runs twice
//     concurrently because of a flaky link.
//   - SIGTERM (ctx ending) means: take no new work, let the running tasks
//     finish within ShutdownGrace, else stop them and hand them back to
//     the queue, then exit. --once means: run one task and exit,
//     successfully only when that task succeeded; it runs one task at a
//     time, so Concurrent must be 1 with it.
//   - Every process a task starts dies with the task. The task runs under
//     kiln's guard (tasks/guard.go), a child subreaper that sees every
//     process of the task and kills them all when the script ends, when
//     the runner stops it, and when the runner dies (Pdeathsig); each task
//     also gets a cgroup v2 of its own when the runner may create one, and
//     its process group and marker variable are killed at the end. Should
//     the runner and the guard die together, the task's record in
//     <work-dir>/procs lets the next runner on the work directory kill
//     what is left.
package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/runner/protocol"
	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// Defaults of Config.
const (
	DefaultWorkDir       = "./kiln-runner"
	DefaultShutdownGrace = time.Minute
	DefaultMaxBackoff    = 30 * time.Second
)

// Config is everything `kiln runner` is told.
type Config struct {
	// Server is the server's URL, e.g. http://127.0.0.1:8420.
	Server string
	// Token is the runner's token. Empty means: use the token saved in
	// WorkDir by an earlier registration, or register a new worker.
	Token string
	// Name is the worker's name when registering; default the host name.
	Name string
	// WorkDir holds the runner's token file, task working directories and
	// logs. Default DefaultWorkDir.
	WorkDir string
	// Architectures and HostArchitecture override detection (see
	// Metadata).
	Architectures    []string
	HostArchitecture string
	// Concurrent is how many tasks the runner runs at once, each in its
	// own working directory (default 1, at most model.MaxConcurrent). It
	// is reported to the server as the metadata system:concurrent, where
	// the scheduler, worker pools and the API read it, and as
	// kiln_runner_concurrent and kiln_runner_limit. A server that does not
	// list protocol.FeatureConcurrent gets one task at a time.
	Concurrent int
	// Once makes the runner exit after its first task. It runs one task,
	// so Concurrent must be 1 (or unset) with it.
	Once bool
	// Register forces a new registration even when a token is saved.
	Register bool
	// MetricsServer is the address of the runner's /metrics and pprof
	// listener (docs/architecture.md#runner-metrics); off when empty.
	MetricsServer string
	// Pushgateway, when set, receives the outcome of the run when the
	// runner exits, for one-shot runners (--once) that no Prometheus could
	// scrape: job "kiln_runner", instance the runner's name. Only what the
	// run did is pushed (see outcomeFamilies), with
	// kiln_runner_last_success_timestamp_seconds when its last task
	// succeeded and kiln_runner_last_failure_timestamp_seconds otherwise
	// (see telemetry.PushRun).
	Pushgateway string
	// ShutdownGrace is how long the running tasks may still run after
	// SIGTERM before they are stopped and handed back. Default
	// DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// MaxBackoff caps the wait between reconnection attempts. Default
	// DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Logger receives the runner's logs; nil discards them.
	Logger *slog.Logger
	// Out receives the few lines meant for the operator (registration).
	Out io.Writer
	// HTTPClient talks to the server; nil means a default client.
	HTTPClient *http.Client
	// MetricsStarted, when set, is called with the metrics listener's
	// address once it listens (tests use it to find the port).
	MetricsStarted func(addr string)
	// TaskGuard is kiln's own executable, under which tasks run (see
	// tasks/guard.go); the CLI sets it. Empty runs tasks directly: their
	// background processes then outlive a runner killed with SIGKILL
	// until the next runner on the work directory starts.
	TaskGuard string
}

// Runner is one running `kiln runner`.
type Runner struct {
	cfg     Config
	log     *slog.Logger
	http    *http.Client
	token   string
	meta    model.WorkerMetadata
	metrics *metrics
	// cgroups gives each task a cgroup v2 of its own; nil when the runner
	// may create none.
	cgroups *tasks.Cgroups

	mu sync.Mutex
	// jobs are the requests the runner holds, by id: at most
	// cfg.Concurrent (one more for a moment while a result that asked
	// for the next task waits for its ack).
	jobs map[int64]*job
	conn string // connection state, one of the Conn… constants
	// lastHeard is when the server last sent anything.
	lastHeard time.Time
	draining  bool
	onceDone  bool
	// runs counts the jobs the server is done with (results recorded,
	// hand-backs, cancellations); lastRun is how the last one ended, a
	// model.Result or one of resultCancelled, resultHandedBack,
	// resultNotRecorded.
	runs    int
	lastRun string
	changed chan struct{} // wakes the session loop after a state change
	// hard ends everything: the grace period and the hand-back are over.
	hard context.Context
	// stageHook, when set (by tests), hears every stage change of a job.
	stageHook func(stage, state string)
}

// job is one work request held by the runner, from the task message to the
// server's ack of its result.
type job struct {
	wr      model.WorkRequest
	cancel  context.CancelFunc
	logPath string
	logSent int64 // bytes of the log sent to the server

	finished bool
	result   protocol.Result
	// release: hand it back instead of reporting a result (shutdown);
	// dropped: the server no longer assigns it to us; report nothing.
	release bool
	dropped bool
	// sentIn is the session that sent the result or release (0: unsent);
	// sentReady says the result asked for the next task.
	sentIn    int
	sentReady bool
	// retryAt delays resending after the server failed to record it.
	retryAt time.Time
	// stage is where the job is, one of the Stage… constants, since
	// stageSince.
	stage      string
	stageSince time.Time
}

// state is the job's state label; r.mu must be held.
func (j *job) state() string {
	switch {
	case j.dropped:
		return StateCancelled
	case j.release:
		return StateHandingBack
	}
	return StateRunning
}

// Run runs the runner until ctx ends (then shuts down gracefully, see the
// package comment) or, with Once, until its first task is reported. It
// fails on what retrying cannot fix: an unusable configuration, a token
// the server refuses, a name already taken at registration. With Once it
// also fails when its task did not run, did not succeed or was not
// recorded by the server: a one-shot runner exits 0 only for a task done.
//
// With Pushgateway set, the outcome of the run is pushed when Run returns,
// whether it failed or not. The run succeeded when Run returns nil and the
// last task the server was done with succeeded; only then is
// kiln_runner_last_success_timestamp_seconds pushed. A runner stopped
// before any task, or one that never reached its server, pushes
// kiln_runner_last_failure_timestamp_seconds.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Pushgateway != "" {
		if err := telemetry.CheckPushURL(cfg.Pushgateway); err != nil {
			return fmt.Errorf("--pushgateway: %w", err)
		}
	}
	if cfg.MetricsServer != "" {
		if _, err := telemetry.ParseListenAddress(cfg.MetricsServer); err != nil {
			return fmt.Errorf("--metrics-server: %w", err)
		}
	}
	m, err := newMetrics()
	if err != nil {
		return err
	}
	r, err := newRunner(ctx, cfg, m)
	if err == nil {
		err = r.serve(ctx)
		if r.cgroups != nil {
			r.cgroups.Close() // empty once the last task is gone
		}
	}
	runs, last := 0, ""
	if r != nil {
		r.mu.Lock()
		runs, last = r.runs, r.lastRun
		r.mu.Unlock()
	}
	success := err == nil && runs > 0 && last == string(model.ResultSuccess)
	if err == nil && cfg.Once && !success {
		err = onceFailed(runs, last)
	}
	if cfg.Pushgateway != "" {
		name := cfg.Name
		if r != nil {
			name = r.cfg.Name
		}
		if perr := pushMetrics(context.WithoutCancel(ctx), cfg, name, m, success); perr != nil {
			logger := cfg.Logger
			if logger == nil {
				logger = slog.New(slog.DiscardHandler)
			}
			logger.Warn("pushing metrics to the Pushgateway", "error", perr)
		}
	}
	return err
}

// serve is Run after start-up: the metrics listener, the signal handling and
// the connection loop.
func (r *Runner) serve(ctx context.Context) error {
	cfg := r.cfg
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	r.hard = hard

	if cfg.MetricsServer != "" {
		addr, err := telemetry.ParseListenAddress(cfg.MetricsServer)
		if err != nil {
			return fmt.Errorf("--metrics-server: %w", err)
		}
		srv, err := telemetry.Listen(addr, telemetry.NewInternalMux(r.metrics.reg, telemetry.WithMuxLogger(r.log)), r.log)
		if err != nil {
			return fmt.Errorf("--metrics-server: %w", err)
		}
		if cfg.MetricsStarted != nil {
			cfg.MetricsStarted(srv.Addr().String())
		}
		mctx, stop := context.WithCancel(hard)
		defer stop()
		done := make(chan struct{})
		go func() { defer close(done); srv.Serve(mctx) }()
		defer func() { stop(); <-done }()
	}

	// SIGTERM: drain; after the grace period, stop the task and hand it
	// back; give up on the server a little later still.
	go func() {
		select {
		case <-ctx.Done():
		case <-hard.Done():
			return
		}
		r.log.Info("shutting down: no new work; the running tasks may finish", "grace", r.cfg.ShutdownGrace.String())
		r.mu.Lock()
		r.draining = true
		r.mu.Unlock()
		r.wake()
		select {
		case <-time.After(r.cfg.ShutdownGrace):
		case <-hard.Done():
			return
		}
		r.mu.Lock()
		for _, j := range r.sortedJobs() {
			if !j.finished {
				r.log.Warn("grace period over: stopping the task and handing it back", "work_request", j.wr.ID)
				j.release = true
				j.cancel()
			}
		}
		r.mu.Unlock()
		select {
		case <-time.After(30 * time.Second):
			r.log.Warn("could not hand every task back to the server; it will requeue them after the heartbeat timeout")
			cancelHard()
		case <-hard.Done():
		}
	}()

	return r.loop(ctx)
}

func newRunner(ctx context.Context, cfg Config, m *metrics) (*Runner, error) {
	if cfg.Server == "" {
		return nil, errors.New("--server is required: the URL of the kiln server")
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = DefaultWorkDir
	}
	if cfg.Concurrent == 0 {
		cfg.Concurrent = 1
	}
	if err := model.CheckConcurrent("--concurrent", cfg.Concurrent); err != nil {
		return nil, err
	}
	if cfg.Once && cfg.Concurrent > 1 {
		return nil, fmt.Errorf("--once runs one task and exits: it cannot run %d at once; leave --concurrent at 1 with --once", cfg.Concurrent)
	}
	if cfg.Name == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			return nil, errors.New("--name is required: the host name is unknown")
		}
		cfg.Name = host
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.Logger = m.logs.Logger(cfg.Logger) // nil: count, discard
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Minute}
	}
	abs, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("--work-dir: %w", err)
	}
	cfg.WorkDir = abs
	if err := os.MkdirAll(cfg.WorkDir, 0o750); err != nil {
		return nil, fmt.Errorf("--work-dir: %w", err)
	}
	// Every request to the server is counted and timed by endpoint and
	// status code.
	r := &Runner{cfg: cfg, log: cfg.Logger.With("runner", cfg.Name), http: m.apiClient(cfg.HTTPClient), metrics: m,
		jobs: map[int64]*job{}, conn: ConnDisconnected, changed: make(chan struct{}, 1)}
	m.setCapacity(cfg.Concurrent)
	if err := m.reg.Register(stateCollector{r}); err != nil {
		return nil, err
	}
	r.isolation()
	r.cleanLeftovers()
	r.meta = Metadata(ctx, cfg.Architectures, cfg.HostArchitecture)
	r.meta.Concurrent = cfg.Concurrent
	if r.token, err = r.resolveToken(ctx); err != nil {
		return nil, err
	}
	r.log.Info("runner ready", "server", cfg.Server, "architectures", r.meta.Architectures,
		"host_architecture", r.meta.HostArchitecture, "backends", r.meta.Backends, "concurrent", cfg.Concurrent, "work_dir", cfg.WorkDir)
	return r, nil
}

// wake tells the session loop that the runner's state changed.
func (r *Runner) wake() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// errFatal marks errors that reconnecting cannot fix.
type errFatal struct{ error }

// Unwrap returns the underlying error.
func (e errFatal) Unwrap() error { return e.error }

// loop connects, runs sessions and reconnects with exponential backoff and
// jitter (reconnectBackoff), until the runner is done.
func (r *Runner) loop(ctx context.Context) error {
	reconnect := reconnectBackoff(r.cfg.MaxBackoff)
	for {
		if r.done() {
			return nil
		}
		r.setConn(ConnConnecting)
		welcomed, err := r.session(ctx)
		r.setConn(ConnDisconnected)
		var fatal errFatal
		switch {
		case errors.As(err, &fatal):
			return fatal.error
		case err == nil:
			return nil
		case r.hard.Err() != nil:
			return nil
		}
		if welcomed {
			reconnect.Reset()
		}
		var silent errSilent
		if errors.As(err, &silent) {
			r.metrics.errors.WithLabelValues(errHeartbeat).Inc()
		} else {
			r.metrics.errors.WithLabelValues(errConnect).Inc()
		}
		wait := reconnect.NextBackOff()
		r.log.Warn("connection to the server lost; reconnecting", "error", err, "in", wait.Round(time.Millisecond).String())
		deadline := time.Now().Add(wait)
		for {
			if r.done() {
				return nil
			}
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			t := time.NewTimer(left)
			select {
			case <-t.C:
			case <-r.hard.Done():
				t.Stop()
				return nil
			case <-r.changed: // a drained runner with nothing left exits at once
				t.Stop()
			}
		}
	}
}

// reconnectBackoff paces reconnection attempts: from about 250 ms,
// doubling, with ±50 % jitter so that many runners cut off by one server
// restart do not come back in lockstep, and never longer than maxWait.
func reconnectBackoff(maxWait time.Duration) *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     min(250*time.Millisecond, maxWait*2/3),
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         maxWait * 2 / 3, // the jitter's +50 % reaches maxWait
	}
	b.Reset()
	return b
}

// done reports whether the runner has nothing left to do: it drains or
// ran its one task, and holds no request.
func (r *Runner) done() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.jobs) == 0 && (r.draining || r.onceDone)
}

// wantsWork reports whether the runner takes new tasks; r.mu must be held.
func (r *Runner) wantsWork() bool {
	return !r.draining && !r.onceDone
}

// sortedJobs lists the jobs in request order, so that what is sent about
// them is too; r.mu must be held.
func (r *Runner) sortedJobs() []*job {
	out := make([]*job, 0, len(r.jobs))
	for _, j := range r.jobs {
		out = append(out, j)
	}
	slices.SortFunc(out, func(a, b *job) int { return cmp.Compare(a.wr.ID, b.wr.ID) })
	return out
}

// runningTasks counts the jobs whose task has not finished; r.mu must be
// held.
func (r *Runner) runningTasks() int {
	n := 0
	for _, j := range r.jobs {
		if !j.finished {
			n++
		}
	}
	return n
}

// isolation sets up and logs how the runner holds its tasks' processes.
func (r *Runner) isolation() {
	cg, err := tasks.OpenCgroups(r.cfg.WorkDir)
	switch {
	case err == nil:
		r.cgroups = cg
		r.log.Info("each task runs in a cgroup v2 of its own", "cgroups", cg.Base())
	default:
		r.log.Info("no writable cgroup v2: task processes are held by the guard, their process group and kiln's marker", "reason", err.Error())
	}
	if r.cfg.TaskGuard == "" {
		r.log.Warn("tasks run without kiln's guard: their background processes outlive a runner killed with SIGKILL until a runner starts again on this work directory")
	}
}

// cleanLeftovers kills what tasks of a previous life of this runner left
// running (it may have been killed with SIGKILL, with its tasks' guards):
// the processes its records name (process group, cgroup, marker), those
// of leftover cgroups and those carrying the marker of a leftover task
// directory; then it removes the directories: every task starts in a
// fresh one.
func (r *Runner) cleanLeftovers() {
	procs := filepath.Join(r.cfg.WorkDir, "procs")
	ents, _ := os.ReadDir(procs)
	for _, e := range ents {
		p := filepath.Join(procs, e.Name())
		if n := tasks.KillRecorded(p); n > 0 {
			r.log.Warn("killed processes left by a task of an earlier run of this runner", "record", p, "processes", n)
		}
		os.Remove(p)
	}
	os.MkdirAll(procs, 0o750)
	if r.cgroups != nil {
		if n := r.cgroups.Sweep(); n > 0 {
			r.log.Warn("killed processes left in task cgroups by an earlier run of this runner", "processes", n)
		}
	}
	for _, sub := range []string{"tasks", "logs"} {
		dir := filepath.Join(r.cfg.WorkDir, sub)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			if sub == "tasks" {
				if n := tasks.KillStrays(p); n > 0 {
					r.log.Warn("killed processes left by an earlier run of this runner", "dir", p, "processes", n)
				}
			}
			os.RemoveAll(p)
		}
		os.MkdirAll(dir, 0o750)
	}
}

// setConn records the connection state for kiln_runner_connection_state.
func (r *Runner) setConn(state string) {
	r.mu.Lock()
	r.conn = state
	r.mu.Unlock()
}

// heard records that the server just sent something.
func (r *Runner) heard() {
	r.mu.Lock()
	r.lastHeard = time.Now()
	r.mu.Unlock()
}

// setStage moves a job to another stage, for kiln_runner_jobs and
// kiln_runner_job_stage_duration_seconds.
func (r *Runner) setStage(j *job, stage string) {
	r.mu.Lock()
	if j.stage != stage {
		now := time.Now()
		r.metrics.stageDone(j.stage, now.Sub(j.stageSince))
		j.stage, j.stageSince = stage, now
	}
	hook := r.stageHook
	state := j.state()
	r.mu.Unlock()
	if hook != nil {
		hook(stage, state)
	}
}

// resultNotRecorded is lastRun for a finished task whose result the
// server no longer expected (it had given the request to someone else).
const resultNotRecorded = "not_recorded"

// recordRun notes that the server is done with job j; r.mu must be held.
// gone says the server did not record its result.
func (r *Runner) recordRun(j *job, gone bool) {
	r.runs++
	switch {
	case j.dropped:
		r.lastRun = resultCancelled
	case j.release:
		r.lastRun = resultHandedBack
	case gone:
		r.lastRun = resultNotRecorded
	default:
		r.lastRun = string(j.result.Result)
	}
}

// onceFailed says why a --once run that met no error did not do its task.
func onceFailed(runs int, last string) error {
	switch {
	case runs == 0:
		return errors.New("--once: stopped before running a task")
	case last == resultHandedBack:
		return errors.New("--once: the task was stopped and handed back to the queue unfinished")
	case last == resultCancelled:
		return errors.New("--once: the server cancelled the task")
	case last == resultNotRecorded:
		return errors.New("--once: the task finished but the server had given it to another runner")
	}
	return fmt.Errorf("--once: the task finished with result %s", last)
}

// pushMetrics sends the outcome of the run (outcomeFamilies: what the run
// did, never the live-state gauges or the Go and process collectors of a
// process about to exit, which would stay frozen in the gateway) to the
// Pushgateway: job "kiln_runner", instance the runner's name. Its own
// HTTP client keeps these pushes out of the counts of requests to the
// server.
func pushMetrics(ctx context.Context, cfg Config, name string, m *metrics, success bool) error {
	return telemetry.PushRun(ctx, telemetry.PushConfig{
		URL: cfg.Pushgateway, Job: "kiln_runner", Instance: name, Namespace: "kiln_runner",
	}, m.outcomes(), success, time.Now())
}
