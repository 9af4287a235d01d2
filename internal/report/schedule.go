package report

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/statistics"
	"github.com/kiln-build/kiln/internal/store"
)

// Claims hand out the intervals of the schedule among the replicas that
// share a database (store.SQL.ClaimReport and FinishReport).
type Claims interface {
	ClaimReport(ctx context.Context, slot time.Time, owner string, lease time.Duration) (store.ReportClaim, error)
	FinishReport(ctx context.Context, slot time.Time, owner, writtenTo string) error
}

// ScheduleStore is what a Scheduler reads and claims from; *store.SQL is
// one.
type ScheduleStore interface {
	Source
	Claims
}

// Schedule configures a Scheduler.
type Schedule struct {
	// Interval is how often a report is written: once per interval,
	// intervals counted from the Unix epoch (an hourly report is written
	// early in each hour, a daily one early in each UTC day). Required.
	Interval time.Duration
	// Target receives the reports. Required.
	Target Target
	// Window is the statistics window; DefaultWindow when empty.
	Window string
	// Owner names this replica in the claims; by default the host name,
	// the process id and a random suffix.
	Owner string
	// Lease is how long a claim on an interval lasts: the time its holder
	// has to write the report, retries included, before another replica
	// may take the interval over. 0 means DefaultLease(Interval).
	Lease time.Duration
	// Logger receives what the schedule does; slog.Default() when nil.
	Logger *slog.Logger
}

// DefaultLease is half the interval, at most ten minutes.
func DefaultLease(interval time.Duration) time.Duration { return min(interval/2, 10*time.Minute) }

// MinInterval is the shortest interval a schedule accepts.
const MinInterval = time.Second

// Scheduler writes the report of each interval once among all the
// replicas that run one on the same database (see the package comment).
type Scheduler struct {
	st       ScheduleStore
	interval time.Duration
	lease    time.Duration
	target   Target
	window   string
	owner    string
	log      *slog.Logger

	attempts    *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	duration    prometheus.Histogram
	// intervalGauge lets an alert compare the age of the last report with
	// the interval the replicas were configured with, not a number typed
	// into the rule by hand.
	intervalGauge prometheus.Gauge
}

// NewScheduler checks sch and registers the schedule's metrics on reg:
// kiln_report_attempts_total{outcome}, the attempts' durations, the
// configured interval and the time of the last report any replica wrote.
func NewScheduler(st ScheduleStore, sch Schedule, reg prometheus.Registerer) (*Scheduler, error) {
	if sch.Interval < MinInterval {
		return nil, fmt.Errorf("the report interval must be at least %s, not %s", MinInterval, sch.Interval)
	}
	if sch.Target == nil {
		return nil, errors.New("a report schedule needs a target")
	}
	if sch.Window == "" {
		sch.Window = DefaultWindow
	}
	if _, err := statistics.ParseWindow(sch.Window, time.Now()); err != nil {
		return nil, err
	}
	if sch.Lease <= 0 {
		sch.Lease = DefaultLease(sch.Interval)
	}
	if sch.Owner == "" {
		sch.Owner = defaultOwner()
	}
	if sch.Logger == nil {
		sch.Logger = slog.Default()
	}
	s := &Scheduler{st: st, interval: sch.Interval, lease: sch.Lease, target: sch.Target, window: sch.Window, owner: sch.Owner,
		log: sch.Logger.With("component", "reports"),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_report_attempts_total",
			Help: "Attempts of this server at writing the scheduled report, by outcome (success, failure); a failed attempt is retried with backoff.",
		}, []string{"outcome"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_report_last_success_timestamp_seconds",
			Help: "Time the scheduled report was last written by any replica sharing the database, in seconds since the epoch, as of this server's last look at the schedule (0: none in the last 30 days).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kiln_report_attempt_duration_seconds",
			Help:    "Time taken by attempts at writing the scheduled report: reading the figures, encoding and writing them.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		intervalGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_report_interval_seconds",
			Help: "Interval at which this server's schedule writes the report (report_interval).",
		}),
	}
	s.intervalGauge.Set(sch.Interval.Seconds())
	for _, o := range []string{"success", "failure"} {
		s.attempts.WithLabelValues(o)
	}
	for _, c := range []prometheus.Collector{s.attempts, s.lastSuccess, s.duration, s.intervalGauge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// defaultOwner names this process among the replicas.
func defaultOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Run writes the reports until ctx ends. At each interval's start every
// replica asks for the interval; the one that wins writes the report,
// retrying with backoff until its lease is nearly out, and records it.
// The others wait for the next interval, or, while the winner's lease
// runs, for its end: if the report is not written by then, one of them
// takes the interval over.
func (s *Scheduler) Run(ctx context.Context) {
	if err := s.target.Check(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("reports cannot be written to their target now; each interval tries again", "target", s.target.String(), "error", err)
	}
	var written time.Time // the last interval known to have its report
	for {
		slot := slotOf(time.Now(), s.interval)
		var again time.Time // when to look at this interval again, if not written
		if !slot.Equal(written) {
			c, err := s.st.ClaimReport(ctx, slot, s.owner, s.lease)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				s.log.Warn("cannot claim the report's interval; trying again", "error", err)
				again = time.Now().Add(s.lease / 4)
			case c.Won:
				s.noteWritten(c.LastWritten)
				if s.write(ctx, slot, c) {
					written = slot
				} else {
					again = c.LeaseUntil // then it may be claimed again
				}
			case c.Done:
				s.noteWritten(c.LastWritten)
				written = slot
			default: // another replica holds it: see whether it wrote it
				s.noteWritten(c.LastWritten)
				again = c.LeaseUntil.Add(s.lease / 20)
			}
		}
		next := slot.Add(s.interval)
		if !again.IsZero() && again.Before(next) {
			next = again
		}
		t := time.NewTimer(max(time.Until(next), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// slotOf is the start of the interval now is in, intervals counted from
// the Unix epoch: the same instant on every replica whatever its time
// zone, midnight UTC for a daily schedule.
func slotOf(now time.Time, interval time.Duration) time.Time {
	return time.Unix(0, now.UnixNano()/int64(interval)*int64(interval)).UTC()
}

// noteWritten shows when a report was last written, by any replica.
func (s *Scheduler) noteWritten(at time.Time) {
	if !at.IsZero() {
		s.lastSuccess.Set(float64(at.UnixNano()) / 1e9)
	}
}

// write makes and writes the report of the interval c holds, retrying
// with backoff until a tenth of the lease is left, and records it. It
// tells whether the report was written.
func (s *Scheduler) write(ctx context.Context, slot time.Time, c store.ReportClaim) bool {
	actx, cancel := context.WithDeadline(ctx, c.LeaseUntil.Add(-s.lease/10))
	defer cancel()
	pauses := &backoff.ExponentialBackOff{InitialInterval: min(time.Second, s.lease/20), RandomizationFactor: 0.3,
		Multiplier: 2, MaxInterval: max(s.lease/8, time.Millisecond)}
	where, err := backoff.Retry(actx, func() (string, error) { return s.attempt(actx) },
		backoff.WithBackOff(pauses), backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			s.log.Warn("writing the report failed; retrying", "target", s.target.String(), "retry_in", next.Round(time.Millisecond).String(), "error", err)
		}))
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("the report of this interval was not written; another attempt follows when the claim runs out",
				"interval", slot.UTC().Format(time.RFC3339), "claims", c.Claims, "target", s.target.String(), "error", err)
		}
		return false
	}
	if err := s.st.FinishReport(context.WithoutCancel(ctx), slot, s.owner, where); err != nil {
		// written, but another replica may write the interval again
		s.log.Warn("the report was written but could not be recorded as this interval's", "written_to", where, "error", err)
	}
	return true
}

// attempt makes one report and writes it, and counts the attempt.
func (s *Scheduler) attempt(ctx context.Context) (string, error) {
	start := time.Now()
	where, size, err := Write(ctx, s.st, s.target, s.window, start)
	took := time.Since(start)
	s.duration.Observe(took.Seconds())
	if err != nil {
		s.attempts.WithLabelValues("failure").Inc()
		return "", err
	}
	s.attempts.WithLabelValues("success").Inc()
	s.lastSuccess.Set(float64(time.Now().UnixNano()) / 1e9)
	s.log.Info("report written", "written_to", where, "bytes", size, "took", took.Round(time.Millisecond).String())
	return where, nil
}

// Write makes the report of now from src and writes it to t: what
// `kiln report` and each attempt of a schedule do. It returns where the
// report went and its size.
func Write(ctx context.Context, src Source, t Target, window string, now time.Time) (string, int, error) {
	doc, err := Generate(ctx, src, window, now)
	if err != nil {
		return "", 0, err
	}
	body, err := doc.Encode()
	if err != nil {
		return "", 0, err
	}
	where, err := t.Write(ctx, body, doc.GeneratedAt)
	if err != nil {
		return "", 0, err
	}
	return where, len(body), nil
}
