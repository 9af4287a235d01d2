package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/config"
	"github.com/kiln-build/kiln/internal/openmetrics"
	"github.com/kiln-build/kiln/internal/pool"
	"github.com/kiln-build/kiln/internal/report"
	"github.com/kiln-build/kiln/internal/scheduler"
	"github.com/kiln-build/kiln/internal/server"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
	"github.com/kiln-build/kiln/internal/workflow"
)

// newServerCommand is `kiln server`, with the flags the conventions fix
// (docs/architecture.md#conventions). Every flag can also be set as
// KILN_<FLAG> or as a key of the --config file.
func newServerCommand() *cobra.Command {
	var (
		cfg          server.Config
		logFormat    string
		logLevel     string
		registration bool
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the kiln server (REST API, health probes, metrics listener)",
		Long: `Run the kiln server.

With no flags it keeps everything in ./kiln-data: an embedded SQLite database
and a local file store. On first start it creates the admin user; the admin
token is taken from KILN_BOOTSTRAP_TOKEN when set, otherwise generated and
written to <data-dir>/admin-token (mode 0600).

Every flag can also be set in the environment as KILN_<FLAG> (--data-dir is
KILN_DATA_DIR) or in the TOML file given with --config (data_dir = "..."):
flags win over the environment, which wins over the file.

A command line is visible to every local user (ps): give secrets in files
(--database-file, --webhook-secret-file, KILN_BOOTSTRAP_TOKEN_FILE), the
environment or the config file rather than as flags.

SIGTERM or SIGINT shut the server down gracefully.`,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{annotationConfig: configServer},
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return usageError{err}
			}
			if cfg.HeartbeatTimeout < time.Second {
				return usageError{fmt.Errorf("--heartbeat-timeout: must be at least 1s (runners send a heartbeat every third of it), got %s", cfg.HeartbeatTimeout)}
			}
			if cfg.WorkflowMetricsMaxSeries < 1 {
				return usageError{fmt.Errorf("--workflow-metrics-max-series: must be at least 1, got %d", cfg.WorkflowMetricsMaxSeries)}
			}
			if cfg.WorkflowMetricsTTL <= 0 {
				cfg.WorkflowMetricsTTL = -1 // 0 on the command line: never expire
			}
			if cfg.Registration.MaxPending < 1 || cfg.Registration.PerMinute < 1 {
				return usageError{fmt.Errorf("--max-pending-registrations and --registrations-per-minute must be at least 1 (turn registration off with --runner-registration=false)")}
			}
			cfg.Registration.Disabled = !registration
			if cfg.BootstrapToken, err = bootstrapToken(); err != nil {
				return usageError{err}
			}
			cfg.Out = cmd.OutOrStdout()
			cfg.AdminCommand = adminCommand()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			// After the first signal, restore the default handling: a
			// second Ctrl-C ends a shutdown that takes too long.
			go func() {
				<-ctx.Done()
				stop()
			}()
			return server.Run(ctx, cfg, logger)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", server.DefaultListen, "address of the REST API and the health probes, host:port")
	f.StringVar(&cfg.DataDir, "data-dir", server.DefaultDataDir, "directory for the SQLite database, the local file store and the admin-token file (created 0750)")
	f.StringVar(&cfg.Database, "database", "", "postgres://user:password@host/db for PostgreSQL, or a SQLite file path (default <data-dir>/kiln.db)")
	config.AddSecretFile(f, "database")
	f.Var(telemetry.NewListenAddressValue(&cfg.MetricsServer), "metrics-server", "address of the internal /metrics and pprof listener, [host]:port (default port 9252); off when not set. It has no authentication: keep it private")
	f.DurationVar(&cfg.MetricsCacheTTL, "metrics-cache-ttl", openmetrics.DefaultCacheTTL, "how long /api/1.0/open-metrics/ and /api/1.0/service-status/ serve one snapshot of the database; 0 turns the cache off")
	f.IntVar(&cfg.LocalRunners, "local-runners", 0, "keep the worker pool 'local' at this many runners: child processes ('kiln runner', each with a worker of its own; logs in <data-dir>/runners/) of the server that runs the farm's autoscaler; one that exits is logged and started again after a backoff")
	f.Var(telemetry.NewListenAddressValue(&cfg.LocalRunnersMetricsServer), "local-runners-metrics-server", "metrics and pprof listener of the first local runner, [host]:port; runner i listens on port+i-1; off when not set. No authentication: keep it private")
	f.DurationVar(&cfg.PoolInterval, "pool-interval", pool.DefaultInterval, "how often the worker pool autoscaler looks at the pools and the queue (and a replica that does not act tries to take over)")
	f.DurationVar(&cfg.PoolListInterval, "pool-list-interval", pool.DefaultListInterval, "how often the autoscaler compares each pool's instances with its provider's list")
	f.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", scheduler.DefaultHeartbeatTimeout, "how long a runner may stay silent before its work request goes back to the queue")
	f.DurationVar(&cfg.WorkflowMetricsTTL, "workflow-metrics-ttl", workflow.DefaultTTL, "drop a series of the metrics workflow templates declare when no workflow updated it for this long; 0 keeps series until the server stops")
	f.IntVar(&cfg.WorkflowMetricsMaxSeries, "workflow-metrics-max-series", workflow.DefaultMaxSeries, "most series each metric declared by workflow templates may have; observations beyond are dropped and counted")
	f.StringSliceVar(&cfg.NotifyURLs, "notify-url", nil, "URL that receives a JSON POST for every work request the server finishes (repeat the flag or separate URLs with commas)")
	f.StringVar(&cfg.WebhookSecret, "webhook-secret", "", "secret (16+ characters) that signs notifications and verifies signed webhooks at /api/1.0/hooks/{source}/")
	config.AddSecretFile(f, "webhook-secret")
	f.StringVar(&cfg.WebhookUser, "webhook-user", store.AdminUsername, "the user that signed webhooks act as (it needs the contributor role in the workspaces they start work in)")
	f.DurationVar(&cfg.WebhookReplayWindow, "webhook-replay-window", api.DefaultReplayWindow, "how long webhook events that started work are remembered: the same event (same delivery id or signature) sent again within it is refused with 409")
	f.BoolVar(&registration, "runner-registration", true, "let runners without a token register themselves (disabled until an admin enables them); false refuses them: runners then need a token from 'kiln worker create'")
	f.IntVar(&cfg.Registration.MaxPending, "max-pending-registrations", api.DefaultMaxPendingRegistrations, "most self-registered runners waiting for an admin to enable or delete them; registrations beyond are refused")
	f.IntVar(&cfg.Registration.PerMinute, "registrations-per-minute", api.DefaultRegistrationsPerMinute, "runner self-registrations this server accepts per minute (in bursts of as many); more are answered 429")
	f.DurationVar(&cfg.IncompleteArtifactGrace, "incomplete-artifact-grace", server.DefaultIncompleteArtifactGrace, "remove, at each sweep of the file stores, artifacts still missing a file's content this long after they were created (an upload cut by a crash)")
	f.DurationVar(&cfg.Timeouts.Request, "request-timeout", server.DefaultRequestTimeout, "time a client has to send the body of an ordinary API request, and to take its answer")
	f.DurationVar(&cfg.Timeouts.TransferIdle, "transfer-idle-timeout", server.DefaultTransferIdle, "an upload or download of a file or log that moves less than 64 KiB in this long is cut (a whole transfer may take up to 12h)")
	f.DurationVar(&cfg.ReportInterval, "report-interval", 0, "write the statistics report (as 'kiln report' does) to --report-target every interval, e.g. 1h or 24h (at least 1m); among replicas sharing the database one writes each interval's report; off when 0")
	f.StringVar(&cfg.ReportTarget, "report-target", "", "where scheduled reports go: a file path, or s3://bucket/prefix/?endpoint=…&region=… (S3 credentials as for S3 file stores)")
	f.StringVar(&cfg.ReportWindow, "report-window", report.DefaultWindow, "the statistics window of scheduled reports: days up to the report's day, 1d to 366d")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", server.DefaultShutdownTimeout, "how long in-flight requests may take to finish on SIGTERM")
	cfg.HTTPDurationBuckets = telemetry.DefaultDurationBuckets()
	f.Var(telemetry.NewBucketsValue(&cfg.HTTPDurationBuckets), "http-duration-buckets", "upper bounds, in seconds, of the buckets of kiln_http_request_duration_seconds (increasing; +Inf is added)")
	f.StringSliceVar(&cfg.HTTPExcludeRoutes, "http-exclude-routes", nil, "route patterns left out of the request metrics, as the route label shows them, e.g. 'GET /api/1.0/open-metrics/{$}' (repeat the flag or separate with commas)")
	f.String("config", "", "TOML config file; keys are the flag names with '_' for '-' (env KILN_CONFIG)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

// bootstrapToken reads KILN_BOOTSTRAP_TOKEN, or the file that
// KILN_BOOTSTRAP_TOKEN_FILE names (not both).
func bootstrapToken() (string, error) {
	token, path := os.Getenv(server.BootstrapTokenEnv), os.Getenv(server.BootstrapTokenEnv+"_FILE")
	switch {
	case path == "":
		return token, nil
	case token != "":
		return "", fmt.Errorf("%s and %s_FILE: give the token or the file holding it, not both", server.BootstrapTokenEnv, server.BootstrapTokenEnv)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s_FILE: %w", server.BootstrapTokenEnv, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// newLogger builds the slog logger of --log-format and --log-level.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// adminCommand is how the person starting the server here runs the admin
// commands from the same directory, for the next step the server prints.
func adminCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return "kiln"
	}
	wd, _ := os.Getwd()
	onPath, _ := exec.LookPath("kiln")
	return adminCommandFor(exe, wd, onPath)
}

// adminCommandFor decides adminCommand for this executable, working
// directory and the "kiln" found on PATH ("" when none): "kiln" when that
// is this binary; "go run ./cmd/kiln" (relative to wd) when go run built
// this binary, since it is deleted when the server stops; else this
// binary's path, relative when it lies below wd ("./kiln").
func adminCommandFor(exe, wd, onPath string) string {
	if onPath != "" && sameFile(onPath, exe) {
		return "kiln"
	}
	// go run builds into the build cache (…/go-build/xx/…-d/kiln, Go
	// 1.24 on) or a temporary go-build… directory.
	if strings.Contains(exe, string(filepath.Separator)+"go-build") {
		for dir := wd; dir != ""; dir = parentDir(dir) {
			if fileExists(filepath.Join(dir, "go.mod")) && fileExists(filepath.Join(dir, "cmd", "kiln", "main.go")) {
				rel, err := filepath.Rel(wd, filepath.Join(dir, "cmd", "kiln"))
				if err != nil {
					break
				}
				if !strings.HasPrefix(rel, "..") {
					rel = "." + string(filepath.Separator) + rel
				}
				return "go run " + shellWord(rel)
			}
		}
		return "kiln" // go run from outside the repository: nothing better to say
	}
	if rel, err := filepath.Rel(wd, exe); err == nil && wd != "" && !strings.HasPrefix(rel, "..") {
		return shellWord("." + string(filepath.Separator) + rel)
	}
	return shellWord(exe)
}

func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// parentDir is dir's parent, or "" at the root.
func parentDir(dir string) string {
	if p := filepath.Dir(dir); p != dir {
		return p
	}
	return ""
}

// shellWord quotes s for a POSIX shell when it needs it.
func shellWord(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r == '+' || r == ',' || r == ':' ||
			(r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z'))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
