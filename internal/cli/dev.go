package cli

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/bench"
	"github.com/kiln-build/kiln/internal/openmetrics"
	"github.com/kiln-build/kiln/internal/seed"
	"github.com/kiln-build/kiln/internal/server"
	"github.com/kiln-build/kiln/internal/store"
)

// newDevCommand is `kiln dev`: tools for kiln's own developers (synthetic
// farms, benchmarks). Nothing here is needed to run a farm.
func newDevCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Developer tools: seed a synthetic farm, benchmark scrapes",
	}
	cmd.AddCommand(newDevSeedCommand(), newDevBenchScrapeCommand(), newDevBenchScrapeLoadCommand(), newDevServeBytesCommand(),
		newDevBenchWritesCommand(), newDevBenchClaimsCommand(), newDevBenchDashboardCommand(), newDevBenchWakeupCommand())
	return cmd
}

func sizeFlags(cmd *cobra.Command, sz *seed.Sizes) {
	f := cmd.Flags()
	f.IntVar(&sz.Scopes, "scopes", sz.Scopes, "scopes")
	f.IntVar(&sz.WorkspacesEach, "workspaces-per-scope", sz.WorkspacesEach, "workspaces per scope")
	f.IntVar(&sz.Users, "users", sz.Users, "users")
	f.IntVar(&sz.Workers, "workers", sz.Workers, "workers")
	f.IntVar(&sz.WorkRequests, "work-requests", sz.WorkRequests, "work requests")
	f.IntVar(&sz.Artifacts, "artifacts", sz.Artifacts, "artifacts")
	f.IntVar(&sz.FilesPerArtifact, "files-per-artifact", sz.FilesPerArtifact, "files per artifact")
}

func newDevSeedCommand() *cobra.Command {
	sz := seed.Benchmark
	var seedValue int64
	cmd := &cobra.Command{
		Use:   "seed",
		Short: "Fill a database with a synthetic farm (default: 1M work requests, 1M artifacts, 3M files, 10k workers, 50 scopes)",
		Args:  cobra.NoArgs,
	}
	dsn := databaseFlags(cmd)
	sizeFlags(cmd, &sz)
	cmd.Flags().Int64Var(&seedValue, "seed", 1, "random seed")
	cmd.Flags().String("config", "", "TOML config file")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		st, err := store.Open(ctx, dsn())
		if err != nil {
			return err
		}
		defer st.Close()
		if _, err := st.Bootstrap(ctx, store.NewSecret(), ""); err != nil {
			return err
		}
		if err := seed.EnsureFileStore(ctx, st); err != nil {
			return err
		}
		start := time.Now()
		if err := seed.Fill(ctx, st, sz, rand.New(rand.NewSource(seedValue)), seedProgress(cmd.OutOrStdout(), cmd.ErrOrStderr())); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "seeded in %s\n", time.Since(start).Round(time.Second))
		return nil
	}
	return cmd
}

func newDevBenchScrapeCommand() *cobra.Command {
	large := seed.Benchmark
	small := seed.Benchmark
	small.WorkRequests, small.Artifacts = 10_000, 10_000
	cfg := bench.Config{Runs: 5}
	cmd := &cobra.Command{
		Use:   "bench-scrape",
		Short: "Benchmark an uncached scrape of the public metrics against the reference design's GROUP BY queries",
		Long: `Seed (once; reused on later runs) two farms that differ only in their number
of work requests, artifacts and files, on PostgreSQL (--postgres), SQLite
(--sqlite-dir) or both, then time, interleaved, the reference design's four
GROUP BY queries and full uncached scrapes of /api/1.0/open-metrics/ (snapshot,
families, OpenMetrics encoding, through the real handler). Prints a Markdown
table of medians with the ratio, the cost per series and the bytes allocated
per scrape. --recount adds scrapes whose totals are all recomputed by the
queries of 'kiln metrics recount'.`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Postgres, "postgres", "", "postgres:// URL of a server where the benchmark may create databases")
	f.StringVar(&cfg.SQLiteDir, "sqlite-dir", "", "directory for the SQLite farms")
	f.IntVar(&cfg.Runs, "runs", cfg.Runs, "interleaved runs per median")
	f.BoolVar(&cfg.Recount, "recount", false, "also time scrapes that recount every total from the base tables")
	f.BoolVar(&cfg.Reseed, "reseed", false, "drop and refill the benchmark databases")
	f.IntVar(&small.WorkRequests, "small-work-requests", small.WorkRequests, "work requests of the small farm")
	f.IntVar(&small.Artifacts, "small-artifacts", small.Artifacts, "artifacts of the small farm")
	f.IntVar(&large.WorkRequests, "large-work-requests", large.WorkRequests, "work requests of the large farm")
	f.IntVar(&large.Artifacts, "large-artifacts", large.Artifacts, "artifacts of the large farm")
	f.String("config", "", "TOML config file")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if cfg.Postgres == "" && cfg.SQLiteDir == "" {
			return usageError{fmt.Errorf("give --postgres, --sqlite-dir or both")}
		}
		cfg.Small, cfg.Large = small, large
		cfg.Progress, cfg.Log = seedProgress(cmd.OutOrStdout(), cmd.ErrOrStderr()), cmd.ErrOrStderr()
		rs, err := bench.Run(cmd.Context(), cfg)
		if err != nil {
			return err
		}
		bench.Table(cmd.OutOrStdout(), rs)
		return nil
	}
	return cmd
}

func newDevBenchScrapeLoadCommand() *cobra.Command {
	cfg := bench.LoadConfig{CacheTTL: openmetrics.DefaultCacheTTL, Clients: []int{16, 64}, Scrapers: 500, Window: 3 * time.Second, Rounds: 5}
	cmd := &cobra.Command{
		Use:   "bench-scrape-load",
		Short: "Benchmark cached scrapes of a real kiln server against a bare net/http handler serving the same bytes",
		Long: `Start 'kiln server' on a seeded database (see 'kiln dev seed' and 'kiln dev
bench-scrape', which keeps its farms as kiln_bench_* databases) and a bare
net/http handler serving the very bytes the server answers (gzip when asked),
each as its own process, then load them in turn, interleaved, with the same
keep-alive clients asking as Prometheus does: requests per second at each
--clients count with and without gzip, then latency and the server's
resident memory under --scrapers concurrent scrapers. Prints Markdown tables
of medians.`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Database, "database", "", "seeded database the server reads: postgres:// URL or SQLite file (required)")
	f.DurationVar(&cfg.CacheTTL, "metrics-cache-ttl", cfg.CacheTTL, "the server's --metrics-cache-ttl")
	f.IntSliceVar(&cfg.Clients, "clients", cfg.Clients, "concurrent clients whose throughput is compared")
	f.IntVar(&cfg.Scrapers, "scrapers", cfg.Scrapers, "concurrent scrapers whose latency and the server's memory are measured (0: skip)")
	f.DurationVar(&cfg.Window, "window", cfg.Window, "how long each side is loaded per round")
	f.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "interleaved rounds per median")
	f.StringVar(&cfg.Server, "server-binary", "", "kiln binary whose server is loaded (default: this one), to compare versions")
	f.String("config", "", "TOML config file")
	_ = cmd.MarkFlagRequired("database")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		bin, err := os.Executable()
		if err != nil {
			return err
		}
		cfg.Kiln, cfg.Log = bin, cmd.ErrOrStderr()
		rows, err := bench.RunLoad(cmd.Context(), cfg)
		if err != nil {
			return err
		}
		bench.LoadTable(cmd.OutOrStdout(), rows)
		return nil
	}
	return cmd
}

// newDevServeBytesCommand is the bare handler of bench-scrape-load, run as
// its own process like the server it is compared with.
func newDevServeBytesCommand() *cobra.Command {
	var listen, dir string
	cmd := &cobra.Command{
		Use:    "serve-bytes",
		Short:  "Serve fixed bytes with a bare net/http handler (bench-scrape-load's baseline)",
		Args:   cobra.NoArgs,
		Hidden: true,
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "address to listen on")
	cmd.Flags().StringVar(&dir, "dir", "", "directory holding the files plain, gzip and content-type")
	cmd.Flags().String("config", "", "TOML config file")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		h, err := bench.LoadServeBytes(dir)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "serving on http://%s\n", ln.Addr())
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		go func() {
			<-ctx.Done()
			srv.Close()
		}()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	return cmd
}

func newDevBenchWritesCommand() *cobra.Command {
	var cfg bench.WriteConfig
	var cpuProfile, pgServer string
	cmd := &cobra.Command{
		Use:   "bench-writes",
		Short: "Benchmark writes with the running totals kept vs switched off, 1 and 8 concurrent writers",
		Long: `Create artifacts (3 files each) and submit work requests as fast as N
concurrent writers can, on a fresh PostgreSQL database (kiln_bench_writes,
recreated) and a fresh SQLite file, in alternating rounds with the running
totals kept and switched off, while the journal of total changes is folded
as often as a server folds it. Prints Markdown tables: throughput medians
and the median and quartiles of their ratio, CPU time per write (this
process and PostgreSQL's server processes, which load elsewhere on the
machine disturbs less), and for PostgreSQL the wait events its sessions
spent their time in.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&pgServer, "postgres", "", "postgres:// URL of a server where the benchmark may create databases (empty: skip PostgreSQL)")
	sqlite := cmd.Flags().Bool("sqlite", true, "measure SQLite too (in a temporary directory)")
	cmd.Flags().IntSliceVar(&cfg.Writers, "writers", []int{1, 8}, "numbers of concurrent writers")
	cmd.Flags().IntVar(&cfg.Rounds, "rounds", 12, "rounds with and without totals per median")
	cmd.Flags().DurationVar(&cfg.Round, "round", time.Second, "length of one round")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	cmd.Flags().String("config", "", "TOML config file")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if pgServer != "" {
			dsn, err := bench.FreshDatabase(cmd.Context(), pgServer, "kiln_bench_writes")
			if err != nil {
				return err
			}
			cfg.Postgres = dsn
		}
		if *sqlite {
			dir, err := os.MkdirTemp("", "kiln-bench-writes-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			cfg.SQLiteDir = dir
		}
		if cpuProfile != "" {
			f, err := os.Create(cpuProfile)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		}
		cfg.Log = cmd.ErrOrStderr()
		cfg.FoldInterval = server.DefaultFoldInterval
		rs, err := bench.RunWrites(cmd.Context(), cfg)
		if err != nil {
			return err
		}
		bench.WriteTable(cmd.OutOrStdout(), rs)
		return nil
	}
	return cmd
}

func newDevBenchClaimsCommand() *cobra.Command {
	var cfg bench.ClaimsConfig
	cmd := &cobra.Command{
		Use:   "bench-claims",
		Short: "Benchmark claiming: noop requests completed per second by real server and runner processes, vs pgbench",
		Long: `Start a real 'kiln server' and 1, 4 and 8 real 'kiln runner' processes on
loopback, keep the queue full of noop work requests, and count how many the
server completes per second once every runner is connected; read the CPU
time of the server and the runners from /proc. Each trial runs twice: on an
empty queue and on a queue that also holds --backlog pending requests for an
architecture no runner has (older than the noops, so a claim that scans in
queue order passes them all). On PostgreSQL every round also runs
'pgbench -N -c 8 -j 2 -T 8' on a scratch database of the same server, so that
throughput reads as a fraction of what the database does for a simple
workload in the same minutes. Trials are interleaved over --rounds rounds;
the table shows medians. With --baseline, another kiln binary (say, a build
of an older commit) runs every trial too, interleaved, and the table gives
the ratios between the two.

Without --postgres the databases are SQLite files in a temporary directory.`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Postgres, "postgres", "", "postgres:// URL of a server where the benchmark may create databases (kiln_bench_claims_*, kiln_bench_pgbench); SQLite when empty")
	f.IntSliceVar(&cfg.Runners, "runners", []int{1, 4, 8}, "runner counts to measure")
	f.IntVar(&cfg.Backlog, "backlog", 200_000, "pending requests nobody can run in the second queue; 0 skips it")
	f.DurationVar(&cfg.Window, "window", 6*time.Second, "how long each trial counts completions")
	f.IntVar(&cfg.Rounds, "rounds", 3, "rounds of interleaved trials (medians are taken over them)")
	f.StringVar(&cfg.Pgbench, "pgbench", "pgbench", "pgbench command")
	f.StringVar(&cfg.ProfileDir, "profile-dir", "", "directory for CPU profiles (server.pprof, runner.pprof) of one extra trial with the most runners")
	f.StringVar(&cfg.Baseline, "baseline", "", "another kiln binary (an older build) to measure the same way in the same run, interleaved, on databases of its own")
	f.String("config", "", "TOML config file")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg.Log = cmd.ErrOrStderr()
		r, err := bench.RunClaims(cmd.Context(), cfg)
		if err != nil {
			return err
		}
		bench.ClaimsTable(cmd.OutOrStdout(), r)
		return nil
	}
	return cmd
}

func newDevBenchDashboardCommand() *cobra.Command {
	// artifacts only matter to the pages of the requests that made them:
	// a tenth of the scrape benchmark's is enough, and seeds faster
	large := seed.Benchmark
	large.Artifacts = 100_000
	small := large
	small.WorkRequests = 10_000
	var server string
	var runs int
	var reseed bool
	cmd := &cobra.Command{
		Use:   "bench-dashboard",
		Short: "Benchmark every page of the dashboard: server time on a small farm vs a large one",
		Long: `Seed (once; reused on later runs) two farms on a PostgreSQL server that differ
only in their number of work requests — received at the same rate, so the
large farm is older, not busier — then ask every page of the dashboard,
in the server and without the network, page by page on each farm in turn.
Prints a Markdown table of medians and 99th percentiles.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&server, "postgres", "", "postgres:// URL of a server where the benchmark may create databases (required)")
	cmd.Flags().IntVar(&runs, "runs", 200, "requests of each page on each farm")
	cmd.Flags().BoolVar(&reseed, "reseed", false, "drop and refill the benchmark databases")
	cmd.Flags().IntVar(&small.WorkRequests, "small-work-requests", small.WorkRequests, "work requests of the small farm")
	cmd.Flags().IntVar(&large.WorkRequests, "large-work-requests", large.WorkRequests, "work requests of the large farm")
	cmd.Flags().String("config", "", "TOML config file")
	_ = cmd.MarkFlagRequired("postgres")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		small.Artifacts = large.Artifacts
		rs, err := bench.RunDashboard(cmd.Context(), bench.DashboardConfig{Server: server, Small: small, Large: large, Runs: runs,
			Reseed: reseed, Progress: seedProgress(cmd.OutOrStdout(), cmd.ErrOrStderr()), Log: cmd.ErrOrStderr()})
		if err != nil {
			return err
		}
		bench.DashboardTable(cmd.OutOrStdout(), small.WorkRequests, large.WorkRequests, rs)
		return nil
	}
	return cmd
}

func newDevBenchWakeupCommand() *cobra.Command {
	var cfg bench.WakeupConfig
	cmd := &cobra.Command{
		Use:   "bench-wakeup",
		Short: "Benchmark how soon a runner of one replica starts work submitted through another",
		Long: `Start two 'kiln server' replicas on a fresh PostgreSQL database and a 'kiln
runner' connected to the second only, then, one at a time after a random pause,
submit a noop through the first and time how long it waits before the runner's
replica claims it for the runner: from the commit of the submission
(created_at) and from the moment the client sent it, to the claim
(started_at). --baseline measures another kiln build the same way on a
database of its own, its samples interleaved. Prints a Markdown table of
quantiles.`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Postgres, "postgres", "", "postgres:// URL of a server where the benchmark may create databases (required)")
	f.StringVar(&cfg.Baseline, "baseline", "", "another kiln binary to measure the same way, interleaved")
	f.IntVar(&cfg.Samples, "samples", 200, "requests measured per build")
	f.DurationVar(&cfg.MaxPause, "max-pause", time.Second, "pause before each submission, uniform in [0, max-pause): where in a polling runner's interval it falls")
	f.String("config", "", "TOML config file")
	_ = cmd.MarkFlagRequired("postgres")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg.Log = cmd.ErrOrStderr()
		res, err := bench.RunWakeup(cmd.Context(), cfg)
		if err != nil {
			return err
		}
		bench.WakeupTable(cmd.OutOrStdout(), res)
		return nil
	}
	return cmd
}
