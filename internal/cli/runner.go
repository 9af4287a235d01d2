package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/client"
	"github.com/kiln-build/kiln/internal/config"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/runner"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// newRunnerCommand is `kiln runner`, with the flags the conventions fix
// (docs/architecture.md#conventions). Like the server's, every flag can
// also be set as KILN_<FLAG> or as a key of the --config file
// (architectures = ["arm64", "armhf"]).
func newRunnerCommand() *cobra.Command {
	var (
		cfg       runner.Config
		logFormat string
		logLevel  string
	)
	cmd := &cobra.Command{
		Use:   "runner --server URL [--token TOKEN]",
		Short: "Run a runner: take work from a kiln server and run it",
		Long: `Run a runner: connect to a kiln server, take the work requests this machine can
run (by architecture and backend), run them and report their results.

With --token (or KILN_TOKEN) the runner uses the token an admin created with
'kiln worker create NAME'. Without one it registers itself under --name and
saves its token in the work directory; the server records the worker disabled
until an admin runs 'kiln worker enable NAME'.

The runner reports its architectures (dpkg's native and foreign ones, else
GOARCH in Debian's names; override with --architectures and
--host-architecture), its backends (host, and unshare when it works), CPUs and
memory.

--concurrent N runs up to N tasks at once, each in a working directory of its
own under --work-dir; the server gives the runner up to N requests.

SIGTERM or SIGINT: the runner takes no new work and lets the running tasks
finish within --shutdown-grace, else stops them and hands them back to the
queue. A second signal stops it at once. --once runs one task and exits: 0
when the task succeeded and the server recorded it, 1 otherwise (no task
before SIGTERM, a failed task, a task handed back); it runs one task, so it
refuses --concurrent above 1.

Every flag can also be set as KILN_<FLAG> or in the TOML --config file. A
command line is visible to every local user (ps): give the token with
--token-file, KILN_TOKEN or the config file rather than --token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return usageError{err}
			}
			if cfg.Server == "" {
				return usageError{fmt.Errorf("--server is required (or KILN_SERVER, or server in --config)")}
			}
			server, err := client.ServerURL(cfg.Server)
			if err != nil {
				return usageError{err}
			}
			if err := model.CheckConcurrent("--concurrent", cfg.Concurrent); err != nil {
				return usageError{err}
			}
			cfg.Server = server.String()
			cfg.Logger = logger
			cfg.Out = cmd.ErrOrStderr()
			// tasks run under kiln's guard, which is this executable
			if exe, err := os.Executable(); err == nil {
				cfg.TaskGuard = exe
			}
			if os.Getenv("GOMAXPROCS") == "" {
				// a runner waits on its server and its tasks' processes;
				// more threads than the tasks it runs at once only spin
				// looking for work (docs/benchmarks.md#claims)
				runtime.GOMAXPROCS(min(runtime.NumCPU(), cfg.Concurrent))
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			go func() {
				<-ctx.Done()
				stop() // a second signal gets the default behaviour: exit now
			}()
			return runner.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Server, "server", "", "URL of the kiln server, e.g. http://127.0.0.1:8420")
	f.StringVar(&cfg.Token, "token", "", "the runner's token")
	config.AddSecretFile(f, "token")
	f.String("config", "", "TOML config file; keys are the flag names with '_' for '-' (env KILN_CONFIG)")
	f.StringVar(&cfg.Name, "name", "", "worker name to register under (default: the host name)")
	f.StringVar(&cfg.WorkDir, "work-dir", runner.DefaultWorkDir, "directory for task working directories, logs and a registered token")
	f.StringSliceVar(&cfg.Architectures, "architectures", nil, "architectures this runner builds for, e.g. amd64,i386 (default: detected)")
	f.StringVar(&cfg.HostArchitecture, "host-architecture", "", "the runner's own architecture (default: detected)")
	f.Var(telemetry.NewListenAddressValue(&cfg.MetricsServer), "metrics-server", "address of the runner's /metrics and pprof listener, [host]:port (default port 9252); off when not set. No authentication: keep it private")
	f.IntVar(&cfg.Concurrent, "concurrent", 1, "how many tasks to run at once, each in its own working directory (1 to 256)")
	f.BoolVar(&cfg.Once, "once", false, "run one task, then exit (non-zero unless the task succeeded); only with --concurrent 1")
	f.StringVar(&cfg.Pushgateway, "pushgateway", "", "Pushgateway URL that receives the outcome of the run when the runner exits (for --once): job kiln_runner, instance the runner's name")
	f.BoolVar(&cfg.Register, "register", false, "register as a new worker even when a token is set or saved")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", runner.DefaultShutdownGrace, "how long the running tasks may run on after SIGTERM before they are handed back")
	f.DurationVar(&cfg.MaxBackoff, "max-backoff", runner.DefaultMaxBackoff, "longest wait between attempts to reconnect")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

var workers = &resource{
	singular: "worker", plural: "workers", nameKey: "name",
	cols: func(*names) []column {
		return []column{field("ID", "id"), field("NAME", "name"), field("TYPE", "worker_type"), field("ENABLED", "enabled"),
			computed("CONNECTED", func(o object) string { return format(o["connected_at"] != nil) }),
			field("BUSY", "busy"),
			computed("CONCURRENT", func(o object) string {
				// the tasks it runs at once (system:concurrent); runners
				// that do not say run one
				if m, _ := o["metadata"].(map[string]any); m["system:concurrent"] != nil {
					return format(m["system:concurrent"])
				}
				return "1"
			}),
			computed("ARCHITECTURES", func(o object) string { return metaField(o, "system:architectures") }),
			computed("BACKENDS", func(o object) string { return metaField(o, "system:backends") }),
			field("LAST_SEEN_AT", "last_seen_at")}
	},
}

func metaField(o object, key string) string {
	m, _ := o["metadata"].(map[string]any)
	return format(m[key])
}

// newWorkerCommand is `kiln worker`: the runners known to the server.
func newWorkerCommand() *cobra.Command {
	cmd, o := group("worker", "Manage workers (runners) and their tokens")

	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an enabled worker and print its runner token, once (admins only)",
		Long: `Create an enabled worker and print the secret of its runner token on stdout,
once: kiln keeps only its hash. Start the runner with it:

  KILN_TOKEN=$(kiln worker create builder-1) kiln runner --server URL`,
		Args: cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			var raw json.RawMessage
			if err := s.c.Do(s.ctx, http.MethodPost, workers.path(), map[string]any{"name": args[0]}, &raw); err != nil {
				return err
			}
			if s.p.json {
				return s.p.raw(raw)
			}
			var w struct {
				ID    int64 `json:"id"`
				Token struct {
					Secret string `json:"secret"`
				} `json:"token"`
			}
			if err := json.Unmarshal(raw, &w); err != nil || w.Token.Secret == "" {
				return fmt.Errorf("the server's answer holds no token secret")
			}
			s.p.note("worker %s (id %d) created and enabled; its runner token is shown only now:", args[0], w.ID)
			_, err := fmt.Fprintln(s.p.out, w.Token.Secret)
			return err
		}),
	}

	var enabled, typ string
	list := &cobra.Command{
		Use:   "list",
		Short: "List workers",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if enabled != "" {
				q.Set("enabled", enabled)
			}
			if typ != "" {
				q.Set("worker_type", typ)
			}
			return workers.list(s, q)
		}),
	}
	list.Flags().StringVar(&enabled, "enabled", "", "only enabled (true) or disabled (false) workers")
	list.Flags().StringVar(&typ, "type", "", "only workers of this type: external, server or signing")

	toggle := func(use, short string, to bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " WORKER",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: run(o, func(s *session, args []string) error {
				id, err := workers.byName(s, args[0])
				if err != nil {
					return err
				}
				_, err = workers.update(s, id, map[string]any{"enabled": to})
				return err
			}),
		}
	}
	cmd.AddCommand(create, list, workers.showCommand(o, workers.byName),
		toggle("enable", "Enable a worker: it gets work (admins only)", true),
		toggle("disable", "Disable a worker: it gets no new work (admins only)", false),
		workers.deleteCommand(o, workers.byName))
	return cmd
}

// waitFor polls fn every interval until it reports done or ctx ends.
func waitFor(ctx context.Context, interval time.Duration, fn func() (bool, error)) error {
	for {
		done, err := fn()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
