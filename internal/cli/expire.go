package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/blobs"
	"github.com/kiln-build/kiln/internal/server"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// expireJob is the Pushgateway job of `kiln expire`, and the prefix of its
// metrics.
const expireJob = "kiln_expire"

// expireMetrics are what one run of `kiln expire` did, as gauges: a
// maintenance job's figures describe its last run, and the Pushgateway
// keeps them until the next one replaces them.
type expireMetrics struct {
	reg        *prometheus.Registry
	deleted    prometheus.Gauge
	kept       prometheus.Gauge
	incomplete prometheus.Gauge
	files      prometheus.Gauge
	fileErrors prometheus.Gauge
	duration   prometheus.Gauge
}

func newExpireMetrics() *expireMetrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: expireJob + "_" + name, Help: help})
	}
	m := &expireMetrics{
		reg:        prometheus.NewRegistry(),
		deleted:    g("artifacts_deleted", "Expired artifacts the last run of kiln expire deleted."),
		kept:       g("artifacts_kept", "Expired artifacts the last run of kiln expire kept because a collection holds them."),
		incomplete: g("incomplete_artifacts_deleted", "Artifacts whose upload was cut that the last run of kiln expire deleted."),
		files:      g("files_deleted", "Files no artifact used any more that the last run of kiln expire deleted from the file stores."),
		fileErrors: g("file_errors", "Files the last run of kiln expire could not delete from the file stores (left behind, unused)."),
		duration:   g("duration_seconds", "Duration of the last run of kiln expire, in seconds."),
	}
	m.reg.MustRegister(m.deleted, m.kept, m.incomplete, m.files, m.fileErrors, m.duration)
	return m
}

// newExpireCommand is `kiln expire`: a maintenance job, run from cron or a
// systemd timer, that deletes expired artifacts and the files nothing uses
// any more.
func newExpireCommand() *cobra.Command {
	var (
		dryRun      bool
		limit       int
		pushgateway string
		grace       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "expire",
		Short: "Delete expired artifacts and the files no artifact uses any more",
		Long: `Delete the artifacts whose time is up — past their expire_at, or older than
their workspace's expiration delay — and remove from the file stores the files
no other artifact uses. Artifacts a collection still holds are kept. Each
artifact goes in its own transaction, so an interrupted run loses nothing and
the next one finishes the work. It also sweeps the file stores of what uploads
interrupted by a killed server left behind, and deletes the artifacts still
missing a file's content --incomplete-grace after they were created (an
upload cut by a runner or server killed mid-upload; those of a request that
still runs are left to it), as servers do every 10 minutes.

For S3 file stores it needs the same credentials as the servers, in its
environment or in the store's credentials_file.

It works on the database directly, like 'kiln metrics recount', and can run
while servers run (from cron or a systemd timer). With --pushgateway it pushes
what it did to a Pushgateway (job kiln_expire, instance the host name), and
kiln_expire_last_success_timestamp_seconds when it succeeded; a failed run
keeps the previous success's timestamp.`,
		Args: cobra.NoArgs,
	}
	dsn := databaseFlags(cmd)
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "only count the expired artifacts; delete nothing (and push nothing)")
	f.IntVar(&limit, "limit", 0, "delete at most this many artifacts in this run (0: no limit)")
	f.StringVar(&pushgateway, "pushgateway", "", "Pushgateway URL that receives the run's metrics (job kiln_expire, instance the host name)")
	f.DurationVar(&grace, "incomplete-grace", server.DefaultIncompleteArtifactGrace, "delete artifacts still missing a file's content this long after they were created")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if limit < 0 {
			return usageError{fmt.Errorf("--limit: must be 0 or more, got %d", limit)}
		}
		if grace < 0 {
			return usageError{fmt.Errorf("--incomplete-grace: must not be negative, got %s", grace)}
		}
		if pushgateway != "" {
			if err := telemetry.CheckPushURL(pushgateway); err != nil {
				return usageError{fmt.Errorf("--pushgateway: %w", err)}
			}
		}
		ctx := cmd.Context()
		m := newExpireMetrics()
		start := time.Now()
		err := runExpire(ctx, dsn(), dryRun, limit, grace, m, cmd.OutOrStdout(), cmd.ErrOrStderr())
		m.duration.Set(time.Since(start).Seconds())
		if pushgateway != "" && !dryRun {
			perr := telemetry.PushRun(context.WithoutCancel(ctx), telemetry.PushConfig{
				URL: pushgateway, Job: expireJob, Namespace: expireJob,
			}, m.reg, err == nil, time.Now())
			if perr != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "kiln: warning: %v\n", perr)
			}
		}
		return err
	}
	return cmd
}

// runExpire does the work of `kiln expire` and fills m.
func runExpire(ctx context.Context, dsn string, dryRun bool, limit int, grace time.Duration, m *expireMetrics, out, progress io.Writer) error {
	if err := checkDatabaseExists(dsn); err != nil {
		return err
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer st.Close()

	if dryRun {
		ids, err := st.ExpiredArtifacts(ctx)
		if err != nil {
			return err
		}
		incomplete, err := st.IncompleteArtifacts(ctx, grace)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "dry run: %d artifacts are past their expiry (those in collections would be kept), %d incomplete artifacts past their grace; nothing deleted\n",
			len(ids), len(incomplete))
		return nil
	}
	fmt.Fprintln(progress, "expiring artifacts…")
	res, err := st.ExpireArtifacts(ctx, limit)
	if res != nil {
		m.deleted.Set(float64(res.Artifacts))
		m.kept.Set(float64(res.Kept))
	}
	if err != nil {
		if res != nil && res.Artifacts > 0 {
			fmt.Fprintf(out, "expired %d artifacts before an error\n", res.Artifacts)
		}
		// Files already released stay behind as orphans; the next run of a
		// content-addressed store reuses or ignores them.
		return fmt.Errorf("expiring artifacts: %w", err)
	}
	fmt.Fprintln(progress, "removing incomplete artifacts…")
	cut, err := st.ExpireIncomplete(ctx, grace, limit)
	if cut != nil {
		m.incomplete.Set(float64(cut.Artifacts))
		res.Released = append(res.Released, cut.Released...)
	}
	if err != nil {
		return fmt.Errorf("removing incomplete artifacts: %w", err)
	}
	// the same rules as the servers': content that an upload under way
	// (on any replica) holds is kept
	mgr := blobs.New(st, blobs.Options{Logger: progressLogger(progress)})
	defer mgr.Close()
	removed := mgr.Remove(ctx, res.Released...)
	m.files.Set(float64(removed.Deleted))
	m.fileErrors.Set(float64(removed.Failed))
	// and what uploads interrupted by a killed server left behind, as
	// the servers do every few minutes
	swept := mgr.Sweep(ctx)
	fmt.Fprintf(out, "expired %d artifacts; kept %d still in collections; removed %d incomplete artifacts; deleted %d unused files; removed %d abandoned uploads\n",
		res.Artifacts, res.Kept, cut.Artifacts, removed.Deleted+swept.Claims.Deleted, swept.Uploads)
	if removed.Failed > 0 {
		return fmt.Errorf("%d unused files could not be deleted from their file stores (see above); they take space but nothing refers to them", removed.Failed)
	}
	return nil
}

// progressLogger writes log records to progress as "kiln: message
// key=value…", the way the command reports its own problems.
func progressLogger(progress io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(progress, &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		switch {
		case len(groups) > 0:
		case a.Key == slog.TimeKey, a.Key == slog.LevelKey:
			return slog.Attr{}
		case a.Key == slog.MessageKey:
			return slog.String("kiln", a.Value.String())
		}
		return a
	}}))
}

// checkDatabaseExists refuses a SQLite path with no database, which
// store.Open would otherwise create, empty: a mistyped --data-dir must not
// look like a farm with nothing to expire.
func checkDatabaseExists(dsn string) error {
	if strings.Contains(dsn, "://") {
		return nil
	}
	path, _, _ := strings.Cut(strings.TrimPrefix(dsn, "file:"), "?")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no database at %s (give the server's --data-dir or --database)", path)
	}
	return nil
}
