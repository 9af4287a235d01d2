package workflow

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/model"
)

// Defaults of MetricsOptions.
const (
	// DefaultTTL is how long a series lives after its last update: long
	// enough for a template that runs daily to keep its series, short
	// enough that series of a renamed step or a retired template leave
	// /metrics within a day.
	DefaultTTL = 24 * time.Hour
	// DefaultMaxSeries is the number of series one metric may have.
	DefaultMaxSeries = 1000
)

// Reasons for a dropped observation, the reason label of
// kiln_workflow_metrics_dropped_observations_total.
const (
	// DropSeriesLimit: the metric already has MaxSeries series and the
	// observation would have made a new one.
	DropSeriesLimit = "series_limit"
	// DropConflict: another template declares the metric with another
	// type, other labels or other buckets, and its series came first.
	DropConflict = "conflict"
	// DropInvalidValue: the value is not a number, or a counter's value
	// is negative.
	DropInvalidValue = "invalid_value"
)

// MetricsOptions tunes Metrics; the zero value gives the defaults.
type MetricsOptions struct {
	// TTL drops a series that no workflow updated for this long
	// (counters, gauges and histograms alike). Zero means DefaultTTL; a
	// negative TTL keeps series for the life of the process.
	TTL time.Duration
	// MaxSeries caps the series of each metric; observations that would
	// make more are dropped and counted. Zero means DefaultMaxSeries.
	MaxSeries int
	// Now is the clock; nil means time.Now. Tests inject a fake one.
	Now func() time.Time
}

// Metrics holds the series of the metrics that workflow templates declare
// and exposes them as a prometheus.Collector, for the server's internal
// /metrics (never the public endpoint: label values come from users'
// templates).
//
// It is a custom collector over its own series map rather than a set of
// client_golang vectors because vectors can neither expire a series by age
// nor refuse a new series beyond a cap, and because the metrics are only
// known at run time, from templates. Every family carries the labels its
// template declares plus workspace and template.
//
// What it decides, and why (after the complaints of Argo's users):
//   - A workflow is counted once, when its root finishes, with every step
//     in its final state: a step that failed, was retried and succeeded
//     counts once, as Succeeded. Step metrics are not emitted as steps
//     finish.
//   - Series not updated for TTL are dropped, histograms too; any update
//     keeps a series alive. A dropped counter that comes back starts from
//     zero, which rate() and increase() read as a counter reset.
//   - Each metric has at most MaxSeries series; what would exceed that is
//     dropped and counted in
//     kiln_workflow_metrics_dropped_observations_total{metric,reason}.
//     Labels cannot use {{duration}} (validation refuses it) or
//     parameters, so cardinality is bounded by the templates themselves.
//   - Nothing survives a restart: series live in memory only. Counters
//     restart from zero (Prometheus handles resets in rate()), gauges and
//     histograms are empty until workflows finish again, and workflows
//     that finish while no server runs are not counted. Each server
//     replica counts the workflows it finished; sum over instances.
//
// Metrics is safe for concurrent use.
type Metrics struct {
	ttl       time.Duration
	maxSeries int
	now       func() time.Time

	mu       sync.Mutex
	families map[string]*family
	dropped  map[[2]string]float64 // {metric, reason} → count

	droppedDesc *prometheus.Desc
	seriesDesc  *prometheus.Desc
}

// NewMetrics returns an empty set of template metrics.
func NewMetrics(opts MetricsOptions) *Metrics {
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = DefaultMaxSeries
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Metrics{
		ttl: opts.TTL, maxSeries: opts.MaxSeries, now: opts.Now,
		families: map[string]*family{},
		dropped:  map[[2]string]float64{},
		droppedDesc: prometheus.NewDesc(MetricPrefix+"metrics_dropped_observations_total",
			"Observations of template-declared metrics that were not recorded, by metric and reason (series_limit, conflict, invalid_value).",
			[]string{"metric", "reason"}, nil),
		seriesDesc: prometheus.NewDesc(MetricPrefix+"metrics_series",
			"Series currently held for each template-declared metric; compare with the per-metric cap.",
			[]string{"metric"}, nil),
	}
}

// family is one metric name with its series.
type family struct {
	kind    metricKind
	labels  []string // declared keys, sorted, then template and workspace
	buckets []float64
	desc    *prometheus.Desc
	series  map[string]*series
}

type series struct {
	values  []string
	value   float64  // counter, gauge
	count   uint64   // histogram
	sum     float64  // histogram
	counts  []uint64 // histogram, cumulative per bucket
	created time.Time
	updated time.Time
}

// Run is one finished workflow, as Metrics.Record needs it.
type Run struct {
	// Template is the template the workflow was started from, as it is
	// now: a template edited while the workflow ran emits its new metrics.
	Template *Template
	// Workspace is the workspace's name, for the workspace label.
	Workspace string
	// Root is the finished workflow root.
	Root *model.WorkRequest
	// Children are the root's children in their final state.
	Children []model.WorkRequest
}

// Record emits the metrics of a finished workflow: the template's
// workflow-level metrics once, and each step's metrics once per child of
// that step, with the child's final status. Children whose step the
// template no longer has, or that have not finished, emit nothing. It
// fails when the root has not finished or the template is invalid.
func (m *Metrics) Record(run Run) error {
	c, err := run.Template.compile()
	if err != nil {
		return err
	}
	phase, ok := PhaseOf(run.Root)
	if !ok {
		return errors.New("workflow: the workflow root has not finished")
	}
	base := []string{run.Template.Name, run.Workspace}
	wvars := map[string]string{
		"workflow.status":   string(phase),
		"workflow.duration": seconds(DurationOf(run.Root)),
		"workflow.name":     run.Template.Name,
	}
	for _, spec := range c.workflow {
		m.emit(spec, wvars, base)
	}
	for i := range run.Children {
		ch := &run.Children[i]
		st := c.stepOf(ch)
		if st == nil || len(st.metrics) == 0 {
			continue
		}
		p, ok := PhaseOf(ch)
		if !ok {
			continue
		}
		vars := map[string]string{"status": string(p), "duration": seconds(DurationOf(ch)), "task.name": ch.StepName}
		if st.matrix {
			var data map[string]any
			_ = json.Unmarshal(ch.Data, &data)
			for k := range run.Template.Matrix {
				s, _ := data[k].(string)
				vars["matrix."+k] = s
			}
		}
		for _, spec := range st.metrics {
			m.emit(spec, vars, base)
		}
	}
	return nil
}

// stepOf finds the template step a child runs: by name, or for the runs
// of a matrix task by the prefix NAME-.
func (c *compiled) stepOf(wr *model.WorkRequest) *compiledStep {
	if s, ok := c.steps[wr.StepName]; ok && !s.matrix {
		return s
	}
	if c.t.Kind == KindMatrix && c.t.Task != nil && strings.HasPrefix(wr.StepName, c.t.Task.Name+"-") {
		return c.steps[c.t.Task.Name]
	}
	return nil
}

func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

// emit evaluates one declared metric against the variables of a workflow
// or a step and records the observation.
func (m *Metrics) emit(spec *metricSpec, vars map[string]string, base []string) {
	lookup := func(v string) string { return vars[v] }
	if spec.when != nil && !spec.when.eval(lookup) {
		return
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(spec.value.render(lookup)), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || spec.kind == kindCounter && v < 0 {
		m.drop(spec.name, DropInvalidValue)
		return
	}
	values := make([]string, 0, len(spec.keys)+2)
	for _, k := range spec.keys {
		values = append(values, spec.values[k].render(lookup))
	}
	values = append(values, base...)
	m.observe(spec, values, v)
}

func (m *Metrics) drop(metric, reason string) {
	m.mu.Lock()
	m.dropped[[2]string{metric, reason}]++
	m.mu.Unlock()
}

func (m *Metrics) observe(spec *metricSpec, values []string, v float64) {
	labels := append(slices.Clone(spec.keys), "template", "workspace")
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	f := m.families[spec.name]
	if f == nil {
		f = &family{kind: spec.kind, labels: labels, buckets: spec.buckets, series: map[string]*series{},
			desc: prometheus.NewDesc(spec.name, spec.help, labels, nil)}
		m.families[spec.name] = f
	} else if f.kind != spec.kind || !slices.Equal(f.labels, labels) || !slices.Equal(f.buckets, spec.buckets) {
		m.dropped[[2]string{spec.name, DropConflict}]++
		return
	}
	key := strings.Join(values, "\xff")
	s := f.series[key]
	if s == nil {
		if len(f.series) >= m.maxSeries {
			m.expire(f, now)
		}
		if len(f.series) >= m.maxSeries {
			m.dropped[[2]string{spec.name, DropSeriesLimit}]++
			return
		}
		s = &series{values: values, created: now}
		if f.kind == kindHistogram {
			s.counts = make([]uint64, len(f.buckets))
		}
		f.series[key] = s
	}
	s.updated = now
	switch f.kind {
	case kindCounter:
		s.value += v
	case kindGauge:
		s.value = v
	case kindHistogram:
		s.count++
		s.sum += v
		for i, b := range f.buckets {
			if v <= b {
				s.counts[i]++
			}
		}
	}
}

// expire drops the family's series older than the TTL.
func (m *Metrics) expire(f *family, now time.Time) {
	if m.ttl < 0 {
		return
	}
	for k, s := range f.series {
		if now.Sub(s.updated) >= m.ttl {
			delete(f.series, k)
		}
	}
}

// Describe sends nothing: the metrics are only known once templates
// declare them, so Metrics is an unchecked collector.
func (m *Metrics) Describe(chan<- *prometheus.Desc) {}

// Collect drops expired series, then sends every remaining series, the
// count of series per metric and the dropped observations. A family whose
// series all expired disappears, so that a template may redeclare the name
// with another shape.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for name, f := range m.families {
		m.expire(f, now)
		if len(f.series) == 0 {
			delete(m.families, name)
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.seriesDesc, prometheus.GaugeValue, float64(len(f.series)), name)
		for _, s := range f.series {
			switch f.kind {
			case kindCounter:
				ch <- prometheus.MustNewConstMetricWithCreatedTimestamp(f.desc, prometheus.CounterValue, s.value, s.created, s.values...)
			case kindGauge:
				ch <- prometheus.MustNewConstMetric(f.desc, prometheus.GaugeValue, s.value, s.values...)
			case kindHistogram:
				buckets := make(map[float64]uint64, len(f.buckets))
				for i, b := range f.buckets {
					buckets[b] = s.counts[i]
				}
				ch <- prometheus.MustNewConstHistogramWithCreatedTimestamp(f.desc, s.count, s.sum, buckets, s.created, s.values...)
			}
		}
	}
	for k, n := range m.dropped {
		ch <- prometheus.MustNewConstMetric(m.droppedDesc, prometheus.CounterValue, n, k[0], k[1])
	}
}

var _ prometheus.Collector = (*Metrics)(nil)
