// Package localrunners starts and supervises the runners a server runs as
// child processes of its own (`kiln server --local-runners N`): each a
// `kiln runner` that talks to the server's API like any other runner and
// shares nothing else with it.
//
// Rules it keeps, each learnt from a runner that died silently:
//
//   - A child inherits none of the server's settings. The environment is
//     the server's minus every KILN_ variable (the server's own
//     KILN_METRICS_SERVER made the children fail with "address in use",
//     its KILN_CONFIG with "unknown key data_dir"), plus the child's token;
//     everything else a child needs is an explicit flag.
//   - A child that exits while the server runs is logged, with its exit
//     status and the last line of its log, counted
//     (kiln_local_runner_exits_total) and started again after an
//     exponential backoff with jitter (cenkalti/backoff), reset once a
//     child has run for StableAfter. A crash loop shows as a slow, logged,
//     alertable loop, never as a hot one or as silence.
//   - Children die with the server, even one killed with SIGKILL
//     (Pdeathsig). Stop asks them to finish or hand back their task
//     (SIGTERM) and kills those that take too long.
//
// It is the one place that knows how to run runner processes, so that the
// `process` provider of worker pools can take it over whole.
package localrunners

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	DefaultStableAfter = time.Minute
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = time.Minute
)

// Runner is one child to run: a worker the server created, with its token.
type Runner struct {
	// Name is the worker's name (--name).
	Name string
	// Token is the worker's token secret, passed as KILN_TOKEN so that it
	// stays out of the process list.
	Token string
	// MetricsServer is the child's --metrics-server address; "" for none.
	MetricsServer string
}

// Config is how the children are run.
type Config struct {
	// Command is the runner command without its flags, e.g.
	// ["/usr/bin/kiln", "runner"].
	Command []string
	// Server is the URL the children connect to (--server).
	Server string
	// Dir holds each child's work directory (<Dir>/<name>/) and log
	// (<Dir>/<name>.log); it is created when missing.
	Dir string
	// ShutdownGrace is the children's --shutdown-grace.
	ShutdownGrace time.Duration
	// StableAfter is how long a child must run for its next crash to
	// restart it after the shortest wait again. Default DefaultStableAfter.
	StableAfter time.Duration
	// NewBackOff makes the restart policy of one child; nil means
	// exponential from DefaultMinBackoff to DefaultMaxBackoff with ±20 %
	// jitter.
	NewBackOff func() backoff.BackOff
	// Logger hears of starts, exits and restarts; nil discards.
	Logger *slog.Logger
	// Registerer, when set, receives the supervisor's metrics.
	Registerer prometheus.Registerer
}

// MetricsAddresses gives n children listeners on consecutive ports from
// base ("[host]:port", as telemetry.ParseListenAddress returns it): the
// first child gets port, the second port+1, and so on. Port 0 is refused:
// a scrape configuration needs to know the ports.
func MetricsAddresses(base string, n int) ([]string, error) {
	host, portStr, err := net.SplitHostPort(base)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("port %q is not a number", portStr)
	}
	if port == 0 {
		return nil, errors.New("port 0 is not allowed: runner i listens on port+i-1, which a scrape configuration must know")
	}
	if port+n-1 > 65535 {
		return nil, fmt.Errorf("%d runners from port %d go past port 65535", n, port)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = net.JoinHostPort(host, strconv.Itoa(port+i))
	}
	return out, nil
}

// Supervisor runs the children until Stop.
type Supervisor struct {
	cfg      Config
	log      *slog.Logger
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	children []*child
	running  prometheus.Gauge
	exits    prometheus.Counter
}

// Start starts every runner of rs and supervises them. It fails, with
// nothing left running, when the directory cannot be made or the metrics
// cannot be registered; a child that cannot start is logged and retried
// like one that exited.
func Start(cfg Config, rs []Runner) (*Supervisor, error) {
	if len(cfg.Command) == 0 {
		return nil, errors.New("local runners: no runner command")
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
	s := &Supervisor{cfg: cfg, log: cfg.Logger, stop: make(chan struct{}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_local_runners_running",
			Help: "Runner processes started by this server (--local-runners) that are running now.",
		}),
		exits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_local_runner_exits_total",
			Help: "Times a runner process started by this server exited (or could not start) while the server ran; each is started again after a backoff.",
		}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("local runners: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("local runners: %w", err)
	}
	if cfg.Registerer != nil {
		desired := prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_local_runners",
			Help: "Runner processes this server is configured to keep running (--local-runners).",
		})
		desired.Set(float64(len(rs)))
		for i, c := range []prometheus.Collector{desired, s.running, s.exits} {
			if err := cfg.Registerer.Register(c); err != nil {
				for _, done := range []prometheus.Collector{desired, s.running, s.exits}[:i] {
					cfg.Registerer.Unregister(done)
				}
				return nil, fmt.Errorf("local runners: %w", err)
			}
		}
	}
	for _, r := range rs {
		c := &child{spec: r, logPath: filepath.Join(dir, r.Name+".log"), env: childEnv(os.Environ(), r.Token)}
		c.args = append(append([]string{}, cfg.Command[1:]...),
			"--server", cfg.Server, "--name", r.Name, "--work-dir", filepath.Join(dir, r.Name))
		if cfg.ShutdownGrace > 0 {
			c.args = append(c.args, "--shutdown-grace", cfg.ShutdownGrace.String())
		}
		if r.MetricsServer != "" {
			c.args = append(c.args, "--metrics-server", r.MetricsServer)
		}
		s.children = append(s.children, c)
		s.wg.Add(1)
		go s.supervise(c)
	}
	return s, nil
}

// childEnv is the server's environment without any KILN_ variable, plus
// the child's token.
func childEnv(environ []string, token string) []string {
	out := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "KILN_") {
			out = append(out, kv)
		}
	}
	return append(out, "KILN_TOKEN="+token)
}

// Stop asks every child to stop (SIGTERM: it finishes or hands back its
// task), kills those still running after timeout, and returns once all are
// gone. It may be called more than once.
func (s *Supervisor) Stop(timeout time.Duration) {
	s.stopOnce.Do(func() { close(s.stop) })
	var exited []chan struct{}
	var procs []*os.Process
	for _, c := range s.children {
		c.mu.Lock()
		if c.proc != nil {
			c.proc.Signal(termSignal)
			procs, exited = append(procs, c.proc), append(exited, c.exited)
		}
		c.mu.Unlock()
	}
	deadline := time.After(timeout)
	for i, done := range exited {
		select {
		case <-done:
		case <-deadline:
			s.log.Warn("local runner did not stop in time; killing it", "pid", procs[i].Pid)
			procs[i].Kill()
			<-done
		}
	}
	s.wg.Wait()
}

func (s *Supervisor) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}
