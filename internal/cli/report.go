package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/report"
	"github.com/kiln-build/kiln/internal/statistics"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// reportJob is the Pushgateway job of `kiln report`, and the prefix of its
// metrics.
const reportJob = "kiln_report"

// reportMetrics are what one run of `kiln report` did, as gauges (see
// expireMetrics).
type reportMetrics struct {
	reg      *prometheus.Registry
	size     prometheus.Gauge
	duration prometheus.Gauge
}

func newReportMetrics() *reportMetrics {
	m := &reportMetrics{
		reg: prometheus.NewRegistry(),
		size: prometheus.NewGauge(prometheus.GaugeOpts{Name: reportJob + "_size_bytes",
			Help: "Size of the report the last run of kiln report wrote, in bytes (0 when it failed)."}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{Name: reportJob + "_duration_seconds",
			Help: "Duration of the last run of kiln report, in seconds."}),
	}
	m.reg.MustRegister(m.size, m.duration)
	return m
}

// newReportCommand is `kiln report`: writes the statistics report once,
// from cron or a systemd timer, as the servers do on a schedule.
func newReportCommand() *cobra.Command {
	var (
		output      string
		window      string
		pushgateway string
	)
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Write the statistics report to a file or an S3 bucket",
		Long: `Write one statistics report: a JSON document (docs/report.schema.json) with
every figure of the public metrics endpoint, read from one snapshot of the
database, its service status, and the statistics per task, scope and
workspace over --window (days up to today), as the dashboard shows them to an
administrator. Its statistics name the farm's workspaces, private ones too:
store reports where only operators read them.

--output is a file, replaced whole (a temporary file beside it, renamed over
it), or s3://bucket/prefix/ with the S3 settings of a file store as query
parameters (endpoint, region, path_style, ca_file, credentials_file,
credentials_profile, max_attempts, part_size), e.g.

  s3://kiln-reports/farm/?endpoint=https://s3.eu-west-1.amazonaws.com&region=eu-west-1

where the report is written as report-<UTC time>.json and then as
latest.json, each whole or not at all. S3 credentials come from the
environment (KILN_S3_ACCESS_KEY_ID and KILN_S3_SECRET_ACCESS_KEY, or the AWS_
ones) or from credentials_file, never from the command line.

It works on the database directly, like 'kiln expire', while servers run. With
--pushgateway it pushes kiln_report_duration_seconds, kiln_report_size_bytes
and kiln_report_last_success_timestamp_seconds when it succeeded (job
kiln_report, instance the host name); a failed run keeps the previous
success's timestamp. Servers write reports themselves with --report-interval
and --report-target.`,
		Args: cobra.NoArgs,
	}
	dsn := databaseFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&output, "output", "", "where the report goes: a file path, or s3://bucket/prefix/?endpoint=… (required; not read from KILN_OUTPUT)")
	f.SetAnnotation("output", commandLineOnly, []string{"true"})
	f.StringVar(&window, "window", report.DefaultWindow, fmt.Sprintf("the statistics' window: days up to today, 1d to %dd", statistics.MaxDays))
	f.StringVar(&pushgateway, "pushgateway", "", "Pushgateway URL that receives the run's metrics (job kiln_report, instance the host name)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if output == "" {
			return usageError{fmt.Errorf("--output: required: %s", report.TargetHelp)}
		}
		if _, err := statistics.ParseWindow(window, time.Now()); err != nil {
			return usageError{fmt.Errorf("--window: %w", err)}
		}
		if pushgateway != "" {
			if err := telemetry.CheckPushURL(pushgateway); err != nil {
				return usageError{fmt.Errorf("--pushgateway: %w", err)}
			}
		}
		target, err := report.ParseTarget(output)
		if err != nil {
			return usageError{fmt.Errorf("--output: %w", err)}
		}
		defer target.Close()
		m := newReportMetrics()
		start := time.Now()
		err = runReport(cmd.Context(), dsn(), target, window, m, cmd.OutOrStdout(), cmd.ErrOrStderr())
		m.duration.Set(time.Since(start).Seconds())
		if pushgateway != "" {
			perr := telemetry.PushRun(context.WithoutCancel(cmd.Context()), telemetry.PushConfig{
				URL: pushgateway, Job: reportJob, Namespace: reportJob,
			}, m.reg, err == nil, time.Now())
			if perr != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "kiln: warning: %v\n", perr)
			}
		}
		return err
	}
	return cmd
}

// runReport does the work of `kiln report` and fills m.
func runReport(ctx context.Context, dsn string, target report.Target, window string, m *reportMetrics, out, progress io.Writer) error {
	if err := checkDatabaseExists(dsn); err != nil {
		return err
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer st.Close()
	fmt.Fprintln(progress, "reading the farm's figures…")
	doc, err := report.Generate(ctx, st, window, time.Now())
	if err != nil {
		return err
	}
	body, err := doc.Encode()
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "writing %d bytes to %s…\n", len(body), target)
	where, err := target.Write(ctx, body, doc.GeneratedAt)
	if err != nil {
		return fmt.Errorf("the report was not written: %w", err)
	}
	m.size.Set(float64(len(body)))
	series := 0
	for _, f := range doc.Metrics {
		series += len(f.Series)
	}
	fmt.Fprintf(out, "report written to %s: %d series of %d families, %d runs of %d tasks over %d days\n",
		where, series, len(doc.Metrics), doc.Statistics.Total.Runs, len(doc.Statistics.Tasks), doc.Statistics.Window.Days())
	return nil
}
