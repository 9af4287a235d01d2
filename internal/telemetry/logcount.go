package telemetry

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the level label of LogMetrics, in GitLab Runner's spelling
// (gitlab_runner_errors_total{level}), which operators' alerts already use.
const (
	LevelWarning = "warning"
	LevelError   = "error"
)

// LogMetrics counts the warnings and errors a process logs, by level:
//
//	<name>{level="warning"|"error"}
//
// Every problem a kiln process notices and survives is logged; counting the
// records makes "it keeps complaining" something Prometheus can alert on
// without a log pipeline. Records are counted whatever --log-level lets
// through to the output. A LogMetrics is safe for concurrent use.
type LogMetrics struct {
	warnings, errors prometheus.Counter
}

// NewLogMetrics creates the counter name (e.g. "kiln_runner_errors_total")
// with both level series at 0, and registers it with reg. help describes it
// for the process that owns it.
func NewLogMetrics(reg prometheus.Registerer, name, help string) (*LogMetrics, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"level"})
	if err := reg.Register(vec); err != nil {
		return nil, err
	}
	return &LogMetrics{warnings: vec.WithLabelValues(LevelWarning), errors: vec.WithLabelValues(LevelError)}, nil
}

// Handler returns next wrapped so that every record at slog.LevelWarn or
// above is counted before next sees it (or, below next's level, does not).
func (m *LogMetrics) Handler(next slog.Handler) slog.Handler {
	return countingHandler{next: next, m: m}
}

// Logger is Handler for a whole logger; a nil logger counts and discards.
func (m *LogMetrics) Logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(m.Handler(slog.DiscardHandler))
	}
	return slog.New(m.Handler(l.Handler()))
}

type countingHandler struct {
	next slog.Handler
	m    *LogMetrics
}

func (h countingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	switch {
	case r.Level >= slog.LevelError:
		h.m.errors.Inc()
	case r.Level >= slog.LevelWarn:
		h.m.warnings.Inc()
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return countingHandler{next: h.next.WithAttrs(attrs), m: h.m}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{next: h.next.WithGroup(name), m: h.m}
}
