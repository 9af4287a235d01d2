package cli

import (
	"fmt"
	"math/rand"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/bench"
	"github.com/kiln-build/kiln/internal/seed"
	"github.com/kiln-build/kiln/internal/store"
)

// newDevCommand is `kiln dev`: tools for kiln's own developers (synthetic
// farms, benchmarks). Nothing here is needed to run a farm.
func newDevCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Developer tools: seed a synthetic farm, benchmark scrapes",
	}
	cmd.AddCommand(newDevSeedCommand(), newDevBenchScrapeCommand())
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
	var server string
	var runs int
	var reseed bool
	cmd := &cobra.Command{
		Use:   "bench-scrape",
		Short: "Benchmark a scrape of the public metrics: running totals vs GROUP BY, small farm vs large farm",
		Long: `Seed (once; reused on later runs) two farms on a PostgreSQL server that differ
only in their number of work requests, artifacts and files, then time full
scrapes of /api/1.0/open-metrics/ (caching off) from the running totals and
with every total recomputed by GROUP BY. Prints a Markdown table of medians.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&server, "postgres", "", "postgres:// URL of a server where the benchmark may create databases (required)")
	cmd.Flags().IntVar(&runs, "runs", 5, "scrapes per median")
	cmd.Flags().BoolVar(&reseed, "reseed", false, "drop and refill the benchmark databases")
	cmd.Flags().IntVar(&small.WorkRequests, "small-work-requests", small.WorkRequests, "work requests of the small farm")
	cmd.Flags().IntVar(&small.Artifacts, "small-artifacts", small.Artifacts, "artifacts of the small farm")
	cmd.Flags().IntVar(&large.WorkRequests, "large-work-requests", large.WorkRequests, "work requests of the large farm")
	cmd.Flags().IntVar(&large.Artifacts, "large-artifacts", large.Artifacts, "artifacts of the large farm")
	cmd.Flags().String("config", "", "TOML config file")
	_ = cmd.MarkFlagRequired("postgres")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		rs, err := bench.Run(cmd.Context(), bench.Config{Server: server, Small: small, Large: large, Runs: runs, Reseed: reseed,
			Progress: seedProgress(cmd.OutOrStdout(), cmd.ErrOrStderr()), Log: cmd.ErrOrStderr()})
		if err != nil {
			return err
		}
		bench.Table(cmd.OutOrStdout(), rs)
		return nil
	}
	return cmd
}
