package pool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/config"
	"github.com/kiln-build/kiln/internal/model"
)

// The process provider: each instance is a `kiln runner` child process of
// this server, with a work directory, a log and a token of its own, and
// optionally a metrics listener. It keeps the rules learnt from runners
// that died silently when the server started them itself
// (--local-runners, now a pool of this provider):
//
//   - A child inherits none of the server's settings. The environment is
//     the server's minus every KILN_ variable (the server's own
//     KILN_METRICS_SERVER made children fail with "address in use", its
//     KILN_CONFIG with "unknown key data_dir"), plus the child's token;
//     everything else a child needs is an explicit flag.
//   - A child that exits while its instance lives is logged, with its exit
//     status and the last line of its log, counted
//     (kiln_pool_process_exits_total) and started again after an
//     exponential backoff with jitter, reset once a child has run for
//     StableAfter. A crash loop shows as a slow, logged, alertable loop,
//     never as a hot one or as silence; the autoscaler gives the instance
//     up when its runner stays away longer than the pool's startup
//     timeout.
//   - Children die with the server, even one killed with SIGKILL
//     (Pdeathsig). Destroy and StopAll ask them to finish or hand back
//     their task (SIGTERM) and kill those that take too long.

// Defaults of ProcessConfig.
const (
	DefaultStableAfter = time.Minute
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = time.Minute
)

// ProcessConfig is how a process provider runs runners.
type ProcessConfig struct {
	// Command is the runner command without its flags, e.g.
	// ["/usr/bin/kiln", "runner"].
	Command []string
	// Dir holds each worker's work directory (<Dir>/<worker>/) and log
	// (<Dir>/<worker>.log); it is created when missing.
	Dir string
	// ShutdownGrace is the children's --shutdown-grace: how long a task
	// may run on after SIGTERM before it is handed back.
	ShutdownGrace time.Duration
	// StableAfter is how long a child must run for its next crash to
	// restart it after the shortest wait again. Default
	// DefaultStableAfter.
	StableAfter time.Duration
	// NewBackOff makes the restart policy of one child; nil means
	// exponential from DefaultMinBackoff to DefaultMaxBackoff with ±20 %
	// jitter.
	NewBackOff func() backoff.BackOff
	// Logger hears of starts, exits and restarts; nil discards.
	Logger *slog.Logger
	// Registerer, when set, receives the provider's metrics.
	Registerer prometheus.Registerer
}

// Process is the process provider. It is safe for concurrent use.
type Process struct {
	cfg     ProcessConfig
	dir     string
	log     *slog.Logger
	running *prometheus.GaugeVec
	exits   *prometheus.CounterVec

	mu       sync.Mutex
	children map[string]*child // by instance name
}

var _ HostBound = (*Process)(nil)

// NewProcess makes a process provider; it fails when the directory
// cannot be made or the metrics cannot be registered.
func NewProcess(cfg ProcessConfig) (*Process, error) {
	if len(cfg.Command) == 0 {
		return nil, errors.New("process provider: no runner command")
	}
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = DefaultStableAfter
	}
	if cfg.NewBackOff == nil {
		cfg.NewBackOff = func() backoff.BackOff {
			return &backoff.ExponentialBackOff{InitialInterval: DefaultMinBackoff, RandomizationFactor: 0.2,
				Multiplier: 2, MaxInterval: DefaultMaxBackoff}
		}
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err == nil {
		err = os.MkdirAll(dir, 0o750)
	}
	if err != nil {
		return nil, fmt.Errorf("process provider: %w", err)
	}
	p := &Process{cfg: cfg, dir: dir, log: cfg.Logger, children: map[string]*child{},
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_pool_processes",
			Help: "Runner processes of process worker pools that this server runs now, by worker_pool.",
		}, []string{"worker_pool"}),
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_pool_process_exits_total",
			Help: "Times a runner process of a process worker pool exited (or could not start) while its instance lived, by worker_pool; each is started again after a backoff.",
		}, []string{"worker_pool"}),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if reg := cfg.Registerer; reg != nil {
		if err := reg.Register(p.running); err != nil {
			return nil, fmt.Errorf("process provider: %w", err)
		}
		if err := reg.Register(p.exits); err != nil {
			reg.Unregister(p.running)
			return nil, fmt.Errorf("process provider: %w", err)
		}
	}
	return p, nil
}

// child is one instance's runner process, restarted as often as needed
// until its instance is destroyed.
type child struct {
	pool, name, worker string
	metricsServer      string
	args               []string
	env                []string
	logPath            string
	stop               chan struct{}
	done               chan struct{} // closed when supervision ended

	// startErr is why the last start failed (supervise's own).
	startErr error

	mu      sync.Mutex
	proc    *os.Process   // the running process; nil between runs
	exited  chan struct{} // closed when proc has exited
	waitErr error         // how it exited
}

// Create starts the instance's runner and supervises it. It fails when
// the process cannot start at all (the command is missing, say); a
// process that starts and then exits is started again.
func (p *Process) Create(ctx context.Context, req CreateRequest) (Created, error) {
	s, err := processSettings(req.Pool)
	if err != nil {
		return Created{}, &CallError{Op: "create", Err: err}
	}
	c := &child{pool: req.Pool.Name, name: req.Instance.Name, worker: req.Instance.Worker,
		logPath: filepath.Join(p.dir, req.Instance.Worker+".log"), env: childEnv(os.Environ(), req.Token),
		stop: make(chan struct{}), done: make(chan struct{})}
	if s.MetricsServer != "" && req.Instance.Slot >= 1 {
		addrs, err := MetricsAddresses(s.MetricsServer, req.Instance.Slot)
		if err != nil {
			return Created{}, &CallError{Op: "create", Err: err}
		}
		c.metricsServer = addrs[req.Instance.Slot-1]
	}
	c.args = append(slices.Clone(p.cfg.Command[1:]), "--server", req.ServerURL, "--name", c.worker,
		"--work-dir", filepath.Join(p.dir, c.worker), "--architectures", strings.Join(req.Pool.Architectures, ","),
		"--concurrent", strconv.Itoa(max(req.Pool.Concurrent, 1)))
	if p.cfg.ShutdownGrace > 0 {
		c.args = append(c.args, "--shutdown-grace", p.cfg.ShutdownGrace.String())
	}
	if c.metricsServer != "" {
		c.args = append(c.args, "--metrics-server", c.metricsServer)
	}
	p.exits.WithLabelValues(c.pool) // from 0, so that increase() sees the first exit
	p.mu.Lock()
	if _, ok := p.children[c.name]; ok {
		p.mu.Unlock()
		return Created{}, &CallError{Op: "create", Err: fmt.Errorf("instance %s runs already", c.name)}
	}
	p.children[c.name] = c
	p.mu.Unlock()
	pid, err := p.start(c)
	if err != nil {
		p.forget(c)
		close(c.done)
		return Created{}, &CallError{Op: "create", Err: err}
	}
	go p.supervise(c)
	return Created{ProviderID: "pid " + strconv.Itoa(pid)}, nil
}

func (p *Process) forget(c *child) {
	p.mu.Lock()
	if p.children[c.name] == c {
		delete(p.children, c.name)
	}
	p.mu.Unlock()
}

// childEnv is the server's environment without any KILN_ variable, plus
// the child's token.
func childEnv(environ []string, token string) []string {
	return append(config.WithoutKilnSettings(environ), "KILN_TOKEN="+token)
}

// start starts one run of c and returns its pid.
func (p *Process) start(c *child) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.stop:
		return 0, errors.New("the instance is being destroyed")
	default:
	}
	logf, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return 0, err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(p.cfg.Command[0], c.args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// The child dies with the server, even a server killed with SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	exited := make(chan struct{})
	c.proc, c.exited = cmd.Process, exited
	p.running.WithLabelValues(c.pool).Inc()
	p.log.Info("pool runner started", "worker_pool", c.pool, "instance", c.name, "worker", c.worker,
		"pid", cmd.Process.Pid, "log", c.logPath, "metrics_server", c.metricsServer)
	go func() {
		err := cmd.Wait()
		p.running.WithLabelValues(c.pool).Dec()
		c.mu.Lock()
		c.proc = nil
		c.waitErr = err
		c.mu.Unlock()
		close(exited)
	}()
	return cmd.Process.Pid, nil
}

// supervise waits for c's process to exit, logs the exit, backs off and
// starts it again, until c is stopped.
func (p *Process) supervise(c *child) {
	defer close(c.done)
	b := p.cfg.NewBackOff()
	b.Reset()
	started := time.Now()
	for {
		c.mu.Lock()
		exited := c.exited
		c.mu.Unlock()
		var err error
		if exited != nil {
			select {
			case <-exited:
			case <-c.stop:
				return // destroy signals, waits for and reaps it
			}
			select {
			case <-c.stop:
				return // it exited because it was asked to
			default:
			}
			c.mu.Lock()
			err, c.exited = c.waitErr, nil
			c.mu.Unlock()
		} else {
			err = c.startErr
			select {
			case <-c.stop:
				return
			default:
			}
		}
		ran := time.Since(started)
		if ran >= p.cfg.StableAfter {
			b.Reset()
		}
		wait := b.NextBackOff()
		p.exits.WithLabelValues(c.pool).Inc()
		p.log.Error("pool runner exited; starting it again after a pause", "worker_pool", c.pool, "instance", c.name,
			"worker", c.worker, "status", describe(err), "ran_for", ran.Round(time.Millisecond).String(),
			"restart_in", wait.Round(time.Millisecond).String(), "log", c.logPath, "last_log_line", lastLine(c.logPath))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-c.stop:
			t.Stop()
			return
		}
		started = time.Now()
		_, c.startErr = p.start(c)
	}
}

// Destroy stops the instance's runner: SIGTERM, so that it finishes or
// hands back its task, then SIGKILL once ctx ends.
func (p *Process) Destroy(ctx context.Context, _ *model.WorkerPool, inst Instance) error {
	p.mu.Lock()
	c := p.children[inst.Name]
	delete(p.children, inst.Name)
	p.mu.Unlock()
	if c == nil {
		return nil
	}
	c.terminate(ctx, p.log)
	return nil
}

// terminate stops c's supervision and process, killing the process when
// ctx ends first.
func (c *child) terminate(ctx context.Context, log *slog.Logger) {
	c.mu.Lock()
	close(c.stop)
	proc, exited := c.proc, c.exited
	if proc != nil {
		proc.Signal(syscall.SIGTERM)
	}
	c.mu.Unlock()
	if proc != nil {
		select {
		case <-exited:
		case <-ctx.Done():
			log.Warn("pool runner did not stop in time; killing it", "worker_pool", c.pool, "instance", c.name, "pid", proc.Pid)
			proc.Kill()
			<-exited
		}
	}
	<-c.done
}

// List returns the pool's instances whose runners this process supervises.
func (p *Process) List(_ context.Context, pool *model.WorkerPool) ([]Listed, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Listed
	for _, c := range p.children {
		if c.pool == pool.Name {
			out = append(out, Listed{Name: c.name})
		}
	}
	slices.SortFunc(out, func(a, b Listed) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// StopAll stops every runner (SIGTERM, SIGKILL after timeout), all at
// once, and returns their instances' names.
func (p *Process) StopAll(timeout time.Duration) []string {
	p.mu.Lock()
	all := p.children
	p.children = map[string]*child{}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	names := make([]string, 0, len(all))
	for name, c := range all {
		names = append(names, name)
		wg.Go(func() { c.terminate(ctx, p.log) })
	}
	wg.Wait()
	slices.Sort(names)
	return names
}

// describe says how a process ended, or why it could not start.
func describe(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit status 0"
	case errors.As(err, &ee):
		return ee.ProcessState.String()
	}
	return "not started: " + err.Error()
}

// lastLine returns the last non-empty line of the log at path (from its
// last 4 KiB), which is where a runner says why it stopped.
func lastLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 4 << 10
	if info, err := f.Stat(); err == nil && info.Size() > tail {
		f.Seek(info.Size()-tail, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := bytes.Split(bytes.TrimRight(b, "\r\n"), []byte("\n"))
	return strings.TrimSpace(string(lines[len(lines)-1]))
}
