// Package server runs `kiln server`: it opens the database, prepares it on
// first start, serves the REST API with health probes on the public port,
// optionally serves the internal metrics listener on another, and shuts all
// of it down cleanly when its context ends.
//
// It exists apart from the command-line wiring so that the whole life cycle
// of a server — bootstrap, serving, readiness, shutdown — can be started and
// tested in-process, and so that the CLI only turns flags into a Config.
package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/blobs"
	"github.com/kiln-build/kiln/internal/livelog"
	"github.com/kiln-build/kiln/internal/pool"
	"github.com/kiln-build/kiln/internal/report"
	"github.com/kiln-build/kiln/internal/runner/protocol"
	"github.com/kiln-build/kiln/internal/signal"
	"github.com/kiln-build/kiln/internal/statistics"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// Defaults of `kiln server` (docs/architecture.md#conventions); the CLI
// and the README use these so that they cannot drift apart.
const (
	DefaultListen  = "127.0.0.1:8420"
	DefaultDataDir = "./kiln-data"
)

// BootstrapTokenEnv names the variable that, on first start, sets the admin
// token's secret instead of a generated one, so that automation (CI,
// container entrypoints) can know the token without reading a file.
const BootstrapTokenEnv = "KILN_BOOTSTRAP_TOKEN"

// AdminTokenFile is the name, inside the data directory, of the file that
// receives a generated admin token. It is written with mode 0600 because it
// holds a secret that grants everything.
const AdminTokenFile = "admin-token"

// DefaultShutdownTimeout is how long in-flight requests get to finish after
// SIGTERM before their connections are closed. It stays below the 30 s
// that systemd and Kubernetes wait before SIGKILL.
const DefaultShutdownTimeout = 10 * time.Second

// minBootstrapToken is the shortest KILN_BOOTSTRAP_TOKEN accepted: an admin
// secret short enough to guess would undo everything else.
const minBootstrapToken = 16

// Config is everything `kiln server` is told. The zero value of each field
// means its default.
type Config struct {
	// Listen is the public API address, "host:port" (port 0 picks a free
	// one). Default DefaultListen.
	Listen string
	// DataDir holds the SQLite database, the local file store and the
	// admin-token file. It is created (0750) when missing. Default
	// DefaultDataDir.
	DataDir string
	// Database is a postgres:// URL or a SQLite file path. Default:
	// <DataDir>/kiln.db.
	Database string
	// MetricsServer, when set, is the internal listener's address for
	// /metrics and pprof (docs/architecture.md#server-instrumentation), in
	// the syntax of telemetry.ParseListenAddress. Off when empty.
	MetricsServer string
	// MetricsCacheTTL is how long the public metrics endpoint serves one
	// snapshot (docs/architecture.md#public-endpoint); 0 turns its cache
	// off. The CLI's default is openmetrics.DefaultCacheTTL.
	MetricsCacheTTL time.Duration
	// LocalRunners is the number of runners of the worker pool
	// LocalPool, `kiln runner` children of the server that acts as the
	// farm's autoscaler (see ensureLocalPool); 0 leaves the pool alone.
	LocalRunners int
	// LocalRunnersMetricsServer, when set, gives the local runners metrics
	// listeners: the first on this address ("[host]:port", a fixed port),
	// the next ones on the following ports.
	LocalRunnersMetricsServer string
	// RunnerCommand is the command of a process pool's runner, without
	// its flags; default the server's own executable with "runner". Tests
	// set it.
	RunnerCommand []string
	// PoolInterval is how often the worker pool autoscaler looks at the
	// pools and the queue, and how often a replica that does not act
	// tries to; 0 means pool.DefaultInterval.
	PoolInterval time.Duration
	// PoolListInterval is how often each pool's instances are compared
	// with its provider's list; 0 means pool.DefaultListInterval.
	PoolListInterval time.Duration
	// HeartbeatTimeout is how long a runner may stay silent before its
	// work is requeued; 0 means scheduler.DefaultHeartbeatTimeout.
	HeartbeatTimeout time.Duration
	// ClaimInterval is how often idle runners look at the queue when
	// nothing wakes them; 0 means scheduler.DefaultClaimInterval.
	ClaimInterval time.Duration
	// WorkflowMetricsTTL drops a series of the metrics that workflow
	// templates declare once no workflow updated it for this long; 0 means
	// workflow.DefaultTTL, negative keeps series for the life of the
	// process.
	WorkflowMetricsTTL time.Duration
	// WorkflowMetricsMaxSeries caps the series of each template-declared
	// metric; 0 means workflow.DefaultMaxSeries.
	WorkflowMetricsMaxSeries int
	// NotifyURLs each receive a JSON POST (see notify.go) for every work
	// request this process finishes; delivery is asynchronous, bounded
	// and counted under service "notify" in kiln_outgoing_requests_total.
	NotifyURLs []string
	// notifyRetry shortens the pause before a notification's first retry
	// (tests; notifyRetry when zero).
	notifyRetry time.Duration
	// WebhookSecret signs outgoing notifications and verifies signed
	// incoming webhooks (POST /api/1.0/hooks/{source}/); empty means
	// unsigned notifications and token-authenticated webhooks only.
	WebhookSecret string
	// WebhookUser is who signed webhooks act as; default "admin".
	WebhookUser string
	// WebhookReplayWindow is how long webhook events that started work
	// are remembered, so that the same event sent again is refused;
	// 0 means api.DefaultReplayWindow.
	WebhookReplayWindow time.Duration
	// Registration bounds the self-registration of runners without a
	// token: off, at most so many waiting for an admin, so many a minute.
	Registration api.RegistrationOptions
	// BootstrapToken, when set, is the admin token's secret on first start
	// (from KILN_BOOTSTRAP_TOKEN); otherwise one is generated and written
	// to <DataDir>/admin-token.
	BootstrapToken string
	// FoldInterval is how often the server folds the journal of
	// running-total changes (store.Fold). Default DefaultFoldInterval.
	FoldInterval time.Duration
	// Timeouts bound slow clients (deadlines.go); zero fields mean their
	// defaults.
	Timeouts Timeouts
	// ShutdownTimeout bounds graceful shutdown. Default
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// HTTPDurationBuckets are the upper bounds, in seconds, of
	// kiln_http_request_duration_seconds; empty means
	// telemetry.DefaultDurationBuckets.
	HTTPDurationBuckets []float64
	// HTTPExcludeRoutes are route patterns (as in the route label, e.g.
	// "GET /api/1.0/open-metrics/{$}") left out of the request metrics,
	// like the health probes; a pattern no route has is an error.
	HTTPExcludeRoutes []string
	// Out receives the few lines meant for the person who started the
	// server (where it listens, how to use the admin token); logs go to
	// the logger. Default io.Discard.
	Out io.Writer
	// AdminCommand is how that person runs the admin commands from where
	// they started the server ("kiln" when it is on their PATH, the
	// binary's path, or "go run ./cmd/kiln"), so that the next step it
	// prints works when pasted. Default "kiln".
	AdminCommand string
	// Started, when set, is called once the server accepts connections,
	// with the URLs it serves. Tests use it to learn the ports.
	Started func(Addresses)
	// SweepInterval is how often the file stores are swept of what
	// uploads interrupted by a killed server left behind (see package
	// blobs), and incomplete artifacts past their grace removed (sweep.go);
	// 0 means DefaultSweepInterval.
	SweepInterval time.Duration
	// IncompleteArtifactGrace is how long an artifact may miss the
	// content of a file before the server removes it (sweep.go); 0 means
	// DefaultIncompleteArtifactGrace.
	IncompleteArtifactGrace time.Duration

	// ReportInterval, when not 0, has the server write the statistics
	// report (package report) to ReportTarget once per interval; among
	// replicas sharing the database, one writes each interval's report.
	ReportInterval time.Duration
	// ReportTarget is where scheduled reports go: a file path or
	// s3://bucket/prefix/?endpoint=… (report.ParseTarget).
	ReportTarget string
	// ReportWindow is the statistics window of scheduled reports;
	// report.DefaultWindow when empty.
	ReportWindow string

	// blobs is the process's file store access, shared by the API and
	// the sweeper; set by Run.
	blobs *blobs.Manager
	// reports is ReportTarget, parsed by checkConfig; nil when off.
	reports report.Target
}

// DefaultSweepInterval is how often a server sweeps the file stores. What
// it removes is hours old (abandoned_upload_age), so there is no hurry.
const DefaultSweepInterval = 10 * time.Minute

// Addresses are the base URLs a running server answers on.
type Addresses struct {
	// API is the public listener: REST API and health probes.
	API string
	// Metrics is the internal listener, "" when --metrics-server is off.
	Metrics string
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Database == "" {
		c.Database = filepath.Join(c.DataDir, "kiln.db")
	}
	if c.FoldInterval <= 0 {
		c.FoldInterval = DefaultFoldInterval
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	c.Timeouts.setDefaults()
	if c.IncompleteArtifactGrace <= 0 {
		c.IncompleteArtifactGrace = DefaultIncompleteArtifactGrace
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.AdminCommand == "" {
		c.AdminCommand = "kiln"
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = DefaultSweepInterval
	}
}

// Run starts the server and blocks until ctx is cancelled (the CLI cancels
// it on SIGTERM and SIGINT), then shuts down gracefully: it stops accepting,
// lets in-flight requests finish within ShutdownTimeout, stops the metrics
// listener and closes the database. It returns nil after such a shutdown,
// and an error, with nothing left running, when start-up fails or a listener
// dies.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	cfg.setDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := checkConfig(&cfg); err != nil {
		return err
	}
	if cfg.reports != nil {
		defer cfg.reports.Close()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}

	// Bind the ports before touching the database, so that a busy port
	// fails fast and a first start never bootstraps a server that then
	// cannot run.
	ln, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()

	reg := telemetry.NewRegistry()
	logs, err := telemetry.NewLogMetrics(reg, "kiln_server_errors_total",
		"Warnings and errors the server logged, by level (warning, error), whatever --log-level lets through.")
	if err != nil {
		return err
	}
	logger = logs.Logger(logger)
	var internal *telemetry.Server
	if cfg.MetricsServer != "" {
		addr, err := telemetry.ParseListenAddress(cfg.MetricsServer)
		if err != nil {
			return fmt.Errorf("--metrics-server: %w", err)
		}
		mux := telemetry.NewInternalMux(reg, telemetry.WithMuxLogger(logger),
			telemetry.WithScrapeTimeout(10*time.Second),
			telemetry.WithHandler("GET /-/healthy", healthy()))
		if internal, err = telemetry.Listen(addr, mux, logger); err != nil {
			return fmt.Errorf("--metrics-server: %w", err)
		}
		defer internal.Close()
	}

	st, err := store.Open(ctx, cfg.Database)
	if err != nil {
		return fmt.Errorf("database %s: %w", redactDSN(cfg.Database), err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			logger.Warn("closing the database", "error", err)
		}
	}()
	logger.Info("database ready", "dialect", string(st.Dialect()), "database", redactDSN(cfg.Database))

	boot, err := bootstrap(ctx, st, cfg)
	if err != nil {
		return err
	}
	// a database upgraded to the dashboard's rollups gets them from its
	// history, once (replicas starting together take turns)
	if n, err := st.BackfillStatistics(ctx); err != nil {
		return fmt.Errorf("fill the dashboard's rollups: %w", err)
	} else if n > 0 {
		logger.Info("dashboard rollups filled from the farm's history", "rollups", n)
	}

	if err := registerMetrics(reg, st); err != nil {
		return err
	}
	stopFolder, err := startFolder(ctx, st, reg, cfg.FoldInterval, logger)
	if err != nil {
		return err
	}
	defer stopFolder()
	stopWorkflowMetrics, err := startWorkflowMetrics(ctx, st, reg, cfg, logger)
	if err != nil {
		return err
	}
	defer stopWorkflowMetrics()
	outgoing, err := telemetry.NewOutgoingMetrics(reg, "kiln")
	if err != nil {
		return err
	}
	stopNotifier, err := startNotifier(ctx, st, reg, outgoing, cfg, logger)
	if err != nil {
		return err
	}
	defer stopNotifier()
	cfg.blobs = blobs.New(st, blobs.Options{Logger: logger.With("component", "blobs")})
	defer cfg.blobs.Close()
	bus, err := newSignals(st, cfg, reg, logger)
	if err != nil {
		return err
	}
	liveLogs, err := livelog.New(st, bus, livelog.Options{Logger: logger.With("component", "live-logs"), Registerer: reg})
	if err != nil {
		return err
	}
	sched, err := newScheduler(st, bus, liveLogs, cfg, reg, logger, ln.Addr())
	if err != nil {
		return err
	}
	handler, err := newHandler(st, bus, cfg, logger, reg, sched)
	if err != nil {
		return err
	}
	autoscaler, err := newAutoscaler(st, cfg, "http://"+ln.Addr().String(), reg, logger)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 3)
	go func() { errc <- srv.Serve(ln) }()
	internalDone := make(chan error, 1)
	if internal != nil {
		go func() {
			err := internal.Serve(runCtx)
			internalDone <- err
			if err != nil {
				errc <- err
			}
		}()
	} else {
		internalDone <- nil
	}
	// every replica sweeps: each step of a sweep is idempotent
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		cfg.blobs.RunSweeper(runCtx, cfg.SweepInterval)
	}()
	incompleteDone := make(chan struct{})
	go func() {
		defer close(incompleteDone)
		removeIncomplete(runCtx, st, cfg.blobs, cfg.IncompleteArtifactGrace, cfg.SweepInterval, logger.With("component", "sweep"))
	}()
	reportsDone := make(chan struct{})
	if cfg.reports != nil {
		reports, err := report.NewScheduler(st, report.Schedule{Interval: cfg.ReportInterval, Target: cfg.reports,
			Window: cfg.ReportWindow, Logger: logger}, reg)
		if err != nil {
			return err
		}
		go func() {
			defer close(reportsDone)
			reports.Run(runCtx)
		}()
	} else {
		close(reportsDone)
	}
	// the bus and the relay serve the scheduler and the API alike
	sideDone := make(chan struct{})
	go func() {
		defer close(sideDone)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); liveLogs.Run(runCtx) }()
		bus.Run(runCtx)
		wg.Wait()
	}()
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		if err := sched.Run(runCtx); err != nil {
			errc <- err
		}
	}()

	// Wait, briefly, until the replica hears the others: a server that
	// says it listens is ready (see ready), unless its database is not.
	select {
	case <-bus.Listening():
	case <-time.After(signalWait):
		logger.Warn("not hearing the other replicas yet; serving anyway, not ready until the signal connection is up", "error", bus.Err())
	case <-ctx.Done():
	}
	addrs := Addresses{API: "http://" + ln.Addr().String()}
	logger.Info("kiln server listening", "url", addrs.API, "version", telemetry.ReadBuildInfo().Version)
	if internal != nil {
		addrs.Metrics = "http://" + internal.Addr().String()
	}
	printWelcome(cfg.Out, addrs, boot, cfg.AdminCommand)
	// the worker pools' autoscaler, stopped first at shutdown (below)
	poolCtx, stopPools := context.WithCancel(runCtx)
	defer stopPools()
	poolsDone := make(chan struct{})
	serveErr := ensureLocalPool(ctx, st, cfg)
	if serveErr == nil {
		go func() {
			defer close(poolsDone)
			autoscaler.Run(poolCtx)
		}()
	} else {
		close(poolsDone)
	}
	if serveErr == nil && cfg.Started != nil {
		cfg.Started(addrs)
	}

	if serveErr == nil {
		select {
		case <-ctx.Done():
			logger.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
		case serveErr = <-errc:
			logger.Error("listener failed, shutting down", "error", serveErr)
		}
	}
	// The worker pools first, while the API still serves their runners:
	// process runners finish or hand back their task. Then the runner
	// connections, which the HTTP server's Shutdown does not wait for,
	// then the scheduler.
	stopPools()
	<-poolsDone
	sched.Close()
	stop()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("closing connections still open after the shutdown timeout", "error", err)
		_ = srv.Close()
	}
	<-internalDone
	<-schedDone
	<-sweepDone
	<-incompleteDone
	<-reportsDone
	<-sideDone
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	logger.Info("kiln server stopped")
	return nil
}

// checkConfig refuses what cannot work before anything is started.
func checkConfig(cfg *Config) error {
	if cfg.LocalRunners < 0 {
		return fmt.Errorf("--local-runners: must be 0 or more, got %d", cfg.LocalRunners)
	}
	if cfg.LocalRunnersMetricsServer != "" {
		addr, err := telemetry.ParseListenAddress(cfg.LocalRunnersMetricsServer)
		if err != nil {
			return fmt.Errorf("--local-runners-metrics-server: %w", err)
		}
		addrs, err := pool.MetricsAddresses(addr, max(cfg.LocalRunners, 1))
		if err != nil {
			return fmt.Errorf("--local-runners-metrics-server: %w", err)
		}
		// the server's own listeners would make every child fail to bind
		own := []string{cfg.Listen}
		if cfg.MetricsServer != "" {
			if a, err := telemetry.ParseListenAddress(cfg.MetricsServer); err == nil {
				own = append(own, a)
			}
		}
		for _, a := range addrs {
			if slices.Contains(own, a) {
				return fmt.Errorf("--local-runners-metrics-server: a local runner would listen on %s, where the server itself listens", a)
			}
		}
	}
	for _, u := range cfg.NotifyURLs {
		if err := checkNotifyURL(u); err != nil {
			return err
		}
	}
	if s := cfg.WebhookSecret; s != "" && len(s) < minBootstrapToken {
		return fmt.Errorf("--webhook-secret is too short: use at least %d characters (e.g. the output of `openssl rand -hex 32`)", minBootstrapToken)
	}
	if t := cfg.BootstrapToken; t != "" {
		if strings.TrimSpace(t) != t || strings.ContainsAny(t, " \t\r\n") {
			return fmt.Errorf("%s must not contain spaces or line breaks", BootstrapTokenEnv)
		}
		if len(t) < minBootstrapToken {
			return fmt.Errorf("%s is too short: use at least %d characters (e.g. the output of `openssl rand -hex 32`)", BootstrapTokenEnv, minBootstrapToken)
		}
	}
	return checkReports(cfg) // last: it opens the target, which Run closes
}

// minReportInterval is the shortest report interval a server accepts:
// a report reads the whole farm's figures, and each interval keeps a row
// of the schedule for 30 days.
const minReportInterval = time.Minute

// checkReports checks the report schedule's settings and parses its
// target into cfg.reports.
func checkReports(cfg *Config) error {
	switch {
	case cfg.ReportInterval == 0 && cfg.ReportTarget == "":
		return nil
	case cfg.ReportInterval < 0:
		return fmt.Errorf("--report-interval: must not be negative, got %s", cfg.ReportInterval)
	case cfg.ReportInterval == 0:
		return fmt.Errorf("--report-interval: give how often to write reports to --report-target, e.g. 1h or 24h")
	case cfg.ReportTarget == "":
		return fmt.Errorf("--report-target: give where reports go: %s", report.TargetHelp)
	case cfg.ReportInterval < minReportInterval:
		return fmt.Errorf("--report-interval: must be at least %s, got %s", minReportInterval, cfg.ReportInterval)
	}
	if cfg.ReportWindow == "" {
		cfg.ReportWindow = report.DefaultWindow
	}
	if _, err := statistics.ParseWindow(cfg.ReportWindow, time.Now()); err != nil {
		return fmt.Errorf("--report-window: %w", err)
	}
	t, err := report.ParseTarget(cfg.ReportTarget)
	if err != nil {
		return fmt.Errorf("--report-target: %w", err)
	}
	cfg.reports = t
	return nil
}

// listen binds the public address. It refuses an empty port ("host:"),
// which net.Listen would quietly turn into a random one.
func listen(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: want host:port, e.g. %s: %w", addr, DefaultListen, err)
	}
	if port == "" {
		return nil, fmt.Errorf("--listen %q: missing port, e.g. %s", addr, net.JoinHostPort(host, "8420"))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--listen: %w", err)
	}
	return ln, nil
}

// bootInfo tells printWelcome what bootstrap did.
type bootInfo struct {
	created   bool
	tokenFile string // set when a generated token was written
	fromEnv   bool
}

// bootstrap prepares an empty database. A generated secret is written to
// the token file before the database commits it, so that a crash between
// the two can lose at worst a file nobody needs, never the only copy of the
// admin secret. The secret itself is never logged or printed.
func bootstrap(ctx context.Context, st store.Store, cfg Config) (bootInfo, error) {
	tokenPath := filepath.Join(cfg.DataDir, AdminTokenFile)
	files, err := filepath.Abs(filepath.Join(cfg.DataDir, "files"))
	if err != nil {
		return bootInfo{}, err
	}
	if cfg.BootstrapToken != "" {
		created, err := st.Bootstrap(ctx, cfg.BootstrapToken, files)
		if err != nil {
			return bootInfo{}, fmt.Errorf("first-start setup: %w", err)
		}
		info := bootInfo{created: created, fromEnv: true}
		if _, err := os.Stat(tokenPath); err == nil && !created {
			info.tokenFile = tokenPath
		}
		return info, nil
	}
	secret := store.NewSecret()
	tmp := tokenPath + ".new"
	if err := writeSecret(tmp, secret); err != nil {
		return bootInfo{}, err
	}
	created, err := st.Bootstrap(ctx, secret, files)
	if err != nil || !created {
		os.Remove(tmp)
		if err != nil {
			return bootInfo{}, fmt.Errorf("first-start setup: %w", err)
		}
		info := bootInfo{}
		if _, err := os.Stat(tokenPath); err == nil {
			info.tokenFile = tokenPath
		}
		return info, nil
	}
	if err := os.Rename(tmp, tokenPath); err != nil {
		return bootInfo{}, fmt.Errorf("admin token: the database was set up but the token is in %s: %w", tmp, err)
	}
	return bootInfo{created: true, tokenFile: tokenPath}, nil
}

// writeSecret writes a secret readable by its owner only. The file is
// created with mode 0600 from the start (never widened then narrowed) and
// re-chmodded in case it already existed with looser permissions.
func writeSecret(path, secret string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("admin token: %w", err)
	}
	if _, err := io.WriteString(f, secret+"\n"); err != nil {
		f.Close()
		return fmt.Errorf("admin token: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("admin token: %w", err)
	}
	return f.Close()
}

// printWelcome tells the person who started the server where it is and how
// to use it, without ever showing the secret.
func printWelcome(w io.Writer, addrs Addresses, b bootInfo, kiln string) {
	url := addrs.API
	fmt.Fprintf(w, "kiln server listening on %s\n", url)
	fmt.Fprintf(w, "Dashboard: %s/ (in a browser; sign in with a token to see private workspaces)\n", url)
	if addrs.Metrics != "" {
		fmt.Fprintf(w, "Internal metrics on %s/metrics (no authentication: keep it private).\n", addrs.Metrics)
	}
	switch {
	case b.created && b.fromEnv:
		fmt.Fprintf(w, "First start: admin user created with the token from %s.\n", BootstrapTokenEnv)
	case b.created:
		fmt.Fprintf(w, "First start: admin user created; its token is in %s (mode 0600).\n", b.tokenFile)
	case b.fromEnv:
		fmt.Fprintf(w, "%s ignored: the database already has an admin.\n", BootstrapTokenEnv)
	}
	if b.tokenFile != "" {
		fmt.Fprintf(w, "Use it with the admin commands:\n  export KILN_SERVER=%s KILN_TOKEN=$(cat %s)\n  %s scope list\n",
			url, shellQuote(b.tokenFile), kiln)
	} else if b.fromEnv && b.created {
		fmt.Fprintf(w, "Use it with the admin commands:\n  export KILN_SERVER=%s KILN_TOKEN=\"$%s\"\n  %s scope list\n",
			url, BootstrapTokenEnv, kiln)
	}
}

// shellQuote quotes a path for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r == '+' || r == ',' || r == ':' ||
			(r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z'))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// redactDSN hides the password of a postgres:// URL, so that it can appear
// in logs and error messages.
func redactDSN(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		rest := dsn[i+3:]
		if at := strings.LastIndex(strings.SplitN(rest, "/", 2)[0], "@"); at >= 0 {
			userinfo := rest[:at]
			if u, _, ok := strings.Cut(userinfo, ":"); ok {
				return dsn[:i+3] + u + ":xxxxx" + rest[at:]
			}
		}
	}
	return dsn
}

// registerMetrics adds the server's own collectors to the private registry
// that the internal listener serves.
func registerMetrics(reg *prometheus.Registry, st store.Store) error {
	bi := telemetry.ReadBuildInfo()
	if err := telemetry.RegisterBuildInfo(reg, bi); err != nil {
		return err
	}
	if pool, ok := st.(interface{ DB() *sql.DB }); ok {
		return reg.Register(collectors.NewDBStatsCollector(pool.DB(), "kiln"))
	}
	return nil
}

// healthy answers 200 for as long as the process serves requests: the
// liveness probe.
func healthy() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "kiln is healthy.\n")
	})
}

// signalWait bounds how long a starting server waits for its signal
// connection before it serves anyway.
const signalWait = 10 * time.Second

// readyTimeout bounds the database ping of a readiness probe, which must
// answer before the prober's own timeout.
const readyTimeout = 2 * time.Second

// ready answers 200 when the database answers a ping and the process hears
// the other replicas' signals, and 503 otherwise: the readiness probe that
// takes a replica out of a load balancer when it loses its database, or
// its signal connection — a replica deaf to the others would still work,
// but its runners would wait for the next poll for work submitted
// elsewhere, and a log followed through it would lag.
func ready(st store.Store, bus *signal.Bus, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := st.Ping(ctx); err != nil {
			logger.Warn("readiness probe: database does not answer", "error", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "kiln is not ready: the database does not answer.\n")
			return
		}
		if err := bus.Err(); err != nil {
			logger.Warn("readiness probe: not hearing the other replicas", "error", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "kiln is not ready: it does not hear the other replicas (its signal connection to the database is down).\n")
			return
		}
		io.WriteString(w, "kiln is ready.\n")
	})
}

// Patterns of the probes, which publicRoutes adds to the API's routes.
const (
	healthyPattern = "GET /-/healthy"
	readyPattern   = "GET /-/ready"
)

// uninstrumented are the public port's routes always kept out of the
// request metrics: a runner's WebSocket lives for hours (it would sit in
// the in-flight gauge and stretch the duration histogram), and the probes
// are polled every few seconds (they would drown the API's figures).
// cfg.HTTPExcludeRoutes adds the operator's own.
var uninstrumented = map[string]bool{
	"GET " + protocol.Path + "{$}": true,
	healthyPattern:                 true,
	readyPattern:                   true,
}

// publicRoutes lists every route of the public port — the API, the public
// metrics, the dashboard and the probes — so that the handler and the tests that check
// who may read each route are built from one list.
func publicRoutes(st store.Store, bus *signal.Bus, cfg Config, logger *slog.Logger, d api.Dispatcher, events *telemetry.EventMetrics) ([]api.Route, error) {
	routes, err := apiRoutes(st, cfg, logger, d, events)
	if err != nil {
		return nil, err
	}
	return append(routes,
		api.Route{Pattern: healthyPattern, Handler: healthy()},
		api.Route{Pattern: readyPattern, Handler: ready(st, bus, logger)}), nil
}

// newHandler builds the public port's handler from publicRoutes: each
// route instrumented by its pattern unless it is uninstrumented or one of
// cfg.HTTPExcludeRoutes, and everything else counted as unmatched. A
// handler that panics is answered 500, logged and counted
// (kiln_http_panics_total). Nothing of the internal listener (/metrics,
// pprof) is ever registered here.
func newHandler(st store.Store, bus *signal.Bus, cfg Config, logger *slog.Logger, reg prometheus.Registerer, d api.Dispatcher) (http.Handler, error) {
	events, err := telemetry.NewEventMetrics(reg, "kiln")
	if err != nil {
		return nil, err
	}
	routes, err := publicRoutes(st, bus, cfg, logger, d, events)
	if err != nil {
		return nil, err
	}
	exclude := map[string]bool{}
	for _, p := range cfg.HTTPExcludeRoutes {
		if !slices.ContainsFunc(routes, func(r api.Route) bool { return r.Pattern == p }) {
			return nil, fmt.Errorf("--http-exclude-routes: no route has the pattern %q; give patterns as the route label of kiln_http_requests_total shows them, e.g. %q",
				p, "GET /api/1.0/open-metrics/{$}")
		}
		exclude[p] = true
	}
	m, err := telemetry.NewHTTPMetrics(reg, "kiln", "http", telemetry.WithDurationBuckets(cfg.HTTPDurationBuckets),
		telemetry.WithPanicLogger(logger))
	if err != nil {
		return nil, err
	}
	cfg.Timeouts.setDefaults() // callers other than Run (tests) give none
	mux := http.NewServeMux()
	for _, r := range routes {
		h := cfg.Timeouts.bound(api.TimingOf(r.Pattern), r.Handler)
		if uninstrumented[r.Pattern] || exclude[r.Pattern] {
			m.HandleUninstrumented(mux, r.Pattern, h)
			continue
		}
		m.Handle(mux, r.Pattern, h)
	}
	return cfg.Timeouts.reset(m.CountUnmatched(mux)), nil
}
