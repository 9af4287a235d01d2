package cli

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/config"
	"github.com/kiln-build/kiln/internal/server"
	"github.com/kiln-build/kiln/internal/store"
)

// newMetricsCommand is `kiln metrics`: maintenance of the running totals
// behind the public metrics endpoint. It works on the database directly,
// like the server does, so it can check a farm whose server is down.
func newMetricsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "metrics",
		Short: "Check the running totals behind /api/1.0/open-metrics/",
	}
	cmd.AddCommand(newMetricsRecountCommand())
	return cmd
}

// databaseFlags adds --data-dir and --database with the server's meaning
// and returns a function resolving the DSN.
func databaseFlags(cmd *cobra.Command) func() string {
	var dataDir, database string
	cmd.Flags().StringVar(&dataDir, "data-dir", server.DefaultDataDir, "the server's data directory (for its SQLite database)")
	cmd.Flags().StringVar(&database, "database", "", "postgres://… URL or SQLite file path (default <data-dir>/kiln.db)")
	config.AddSecretFile(cmd.Flags(), "database")
	return func() string {
		if database != "" {
			return database
		}
		return filepath.Join(dataDir, "kiln.db")
	}
}

// listedRollups is how many differing rollups recount prints: a farm
// holds millions of them, and a damaged one may have as many wrong.
const listedRollups = 100

func newMetricsRecountCommand() *cobra.Command {
	var fix bool
	cmd := &cobra.Command{
		Use:   "recount",
		Short: "Recount every metric and rollup from the base tables and report differences from the running totals",
		Long: `Recount every figure of the public metrics endpoint from the base tables with
plain GROUP BY queries (what a scrape would cost without running totals) and
compare it with the running totals the server keeps — as a scrape reads
them, changes still in the journal that servers fold every second
included, all in one snapshot, so servers may keep running; also check
that each user's activity per scope (what user_activity observes) is no
older than their newest root workflow there, and that every label set of
the activity histograms is remembered (so it reports an empty histogram
rather than vanishing when its last user or identity goes). The same for
the dashboard's rollups (runs per hour and day, workspace and task;
requests by status), recounted in SQL alone. Prints each difference (the
first 100 of the rollups') and exits non-zero when there is any; --fix
corrects the differing totals in one transaction, then folds the journal.`,
		Args: cobra.NoArgs,
	}
	dsn := databaseFlags(cmd)
	cmd.Flags().BoolVar(&fix, "fix", false, "rewrite running totals that differ from the recount")
	cmd.Flags().String("config", "", "TOML config file (the server's: same keys)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		st, err := store.Open(ctx, dsn())
		if err != nil {
			return err
		}
		defer st.Close()
		out := cmd.OutOrStdout()
		if !interactive(out, cmd.ErrOrStderr()) {
			fmt.Fprintln(cmd.ErrOrStderr(), "recounting from the base tables…")
		}
		bar := newBar(out, cmd.ErrOrStderr(), -1, "recounting from the base tables", false)
		diffs, err := st.CheckTotals(ctx)
		var rollups []store.Difference
		var more int64
		if err == nil {
			rollups, more, err = st.CheckStatistics(ctx, listedRollups)
		}
		bar.Finish()
		if err != nil {
			return err
		}
		for _, d := range append(diffs, rollups...) {
			fmt.Fprintln(out, d)
		}
		if more > int64(len(rollups)) {
			fmt.Fprintf(out, "… and %d more rollups that differ\n", more-int64(len(rollups)))
		}
		n := int64(len(diffs)) + more
		switch {
		case n == 0:
			fmt.Fprintln(out, "running totals and rollups agree with the recount")
			return nil
		case !fix:
			return fmt.Errorf("%d running totals and rollups differ from the recount (run with --fix to repair them)", n)
		}
		fixed, err := st.FixTotals(ctx)
		if err != nil {
			return err
		}
		fixedRollups, err := st.FixStatistics(ctx)
		if err != nil {
			return err
		}
		if _, err := st.FoldAll(ctx); err != nil {
			return err
		}
		fmt.Fprintf(out, "fixed %d running totals and %d rollups\n", len(fixed), fixedRollups)
		return nil
	}
	return cmd
}
