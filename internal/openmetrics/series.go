package openmetrics

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/kiln-build/kiln/internal/store"
)

// Names of the id labels the store keeps in running totals, and of the
// labels they become once mapped to names at scrape time.
const (
	storedScope = "scope_id"
	storedPool  = "worker_pool_id"
	labelScope  = "scope"
	labelPool   = "worker_pool"
)

// labelSet is the exposed labels of one series.
type labelSet map[string]string

// rows returns the running totals of one family, in snapshot order. The
// order does not matter: every family sorts its series.
func rows(s *store.Snapshot, family string) []store.Total {
	var out []store.Total
	for _, t := range s.Totals {
		if t.Family == family {
			out = append(out, t)
		}
	}
	return out
}

// mapped maps the stored labels of a running total to exposed ones:
// scope_id becomes scope (the scope's name), worker_pool_id becomes
// worker_pool, and only labels named in allowed are kept, so a label the
// store may add later never leaks by accident.
//
// It returns ok=false for a row of a scope or pool that no longer exists
// when the row's value is 0: the label set cannot come back, and its name
// is unknown. A non-zero row of an unknown scope or pool is an
// inconsistency in the store and an error.
func mapped(s *store.Snapshot, t store.Total, allowed ...string) (l labelSet, ok bool, err error) {
	l = labelSet{}
	for _, name := range allowed {
		names, stored, what := s.ScopeNames, storedScope, "scope"
		switch name {
		case labelScope:
		case labelPool:
			names, stored, what = s.PoolNames, storedPool, "worker pool"
		default:
			if v, ok := t.Labels[name]; ok {
				l[name] = v
			}
			continue
		}
		id, present := t.Labels[stored]
		if !present {
			continue
		}
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("%s %v: %s id %q is not a number", t.Family, t.Labels, what, id)
		}
		v, known := names[n]
		if !known {
			if t.Value == 0 {
				return nil, false, nil
			}
			return nil, false, fmt.Errorf("%s %v = %d: no %s with id %d", t.Family, t.Labels, t.Value, what, n)
		}
		l[name] = v
	}
	return l, true, nil
}

// pairs turns a label set into label pairs sorted by name. Values are made
// valid UTF-8 (the formats require it); escaping is the encoder's job.
func pairs(l labelSet) []*dto.LabelPair {
	out := make([]*dto.LabelPair, 0, len(l))
	for n, v := range l {
		if !utf8.ValidString(v) {
			v = strings.ToValidUTF8(v, "\uFFFD")
		}
		out = append(out, &dto.LabelPair{Name: proto.String(n), Value: proto.String(v)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

// labelKey identifies a label set (pairs sorted by name).
func labelKey(lp []*dto.LabelPair) string {
	var b strings.Builder
	for _, p := range lp {
		b.WriteString(p.GetName())
		b.WriteByte(0xff)
		b.WriteString(p.GetValue())
		b.WriteByte(0xfe)
	}
	return b.String()
}

// lessLabels orders series by their label pairs, name then value, pair by
// pair; a prefix sorts first.
func lessLabels(a, b []*dto.LabelPair) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i].GetName() != b[i].GetName() {
			return a[i].GetName() < b[i].GetName()
		}
		if a[i].GetValue() != b[i].GetValue() {
			return a[i].GetValue() < b[i].GetValue()
		}
	}
	return len(a) < len(b)
}

func sortMetrics(ms []*dto.Metric) {
	sort.Slice(ms, func(i, j int) bool { return lessLabels(ms[i].Label, ms[j].Label) })
}

// gauges accumulates the series of a gauge family. Rows that end up with
// the same exposed labels are summed into one series, so the output never
// holds duplicates (for example two architectures whose label names
// collide).
type gauges struct {
	byKey map[string]*dto.Metric
}

func newGauges() *gauges { return &gauges{byKey: map[string]*dto.Metric{}} }

func (g *gauges) add(l labelSet, v float64) {
	lp := pairs(l)
	k := labelKey(lp)
	m, ok := g.byKey[k]
	if !ok {
		m = &dto.Metric{Label: lp, Gauge: &dto.Gauge{Value: proto.Float64(0)}}
		g.byKey[k] = m
	}
	m.Gauge.Value = proto.Float64(m.Gauge.GetValue() + v)
}

func (g *gauges) family(name, help string) *dto.MetricFamily {
	ms := make([]*dto.Metric, 0, len(g.byKey))
	for _, m := range g.byKey {
		ms = append(ms, m)
	}
	sortMetrics(ms)
	return &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: dto.MetricType_GAUGE.Enum(), Metric: ms}
}

// totalsGauge is a gauge family read straight from running totals, with
// the given exposed labels (scope stands for the stored scope_id).
func totalsGauge(s *store.Snapshot, name, help string, allowed ...string) (*dto.MetricFamily, error) {
	g := newGauges()
	for _, t := range rows(s, name) {
		l, ok, err := mapped(s, t, allowed...)
		if err != nil {
			return nil, err
		}
		if ok {
			g.add(l, float64(t.Value))
		}
	}
	return g.family(name, help), nil
}

// histograms accumulates the series of a histogram family with fixed
// upper bounds (the +Inf bucket is implicit: the encoder writes it from
// the count).
type histograms struct {
	bounds []float64
	byKey  map[string]*histSeries
}

type histSeries struct {
	labels []*dto.LabelPair
	counts []int64 // non-cumulative, one per bound and one past the last
	sum    float64
}

func newHistograms(bounds []float64) *histograms {
	return &histograms{bounds: bounds, byKey: map[string]*histSeries{}}
}

func (h *histograms) series(l labelSet) *histSeries {
	lp := pairs(l)
	k := labelKey(lp)
	hs, ok := h.byKey[k]
	if !ok {
		hs = &histSeries{labels: lp, counts: make([]int64, len(h.bounds)+1)}
		h.byKey[k] = hs
	}
	return hs
}

// observe counts one observation of v.
func (h *histograms) observe(l labelSet, v float64) {
	hs := h.series(l)
	i := sort.SearchFloat64s(h.bounds, v) // first bound ≥ v, or len(bounds)
	hs.counts[i]++
	hs.sum += v
}

func (h *histograms) family(name, help string) (*dto.MetricFamily, error) {
	ms := make([]*dto.Metric, 0, len(h.byKey))
	for _, hs := range h.byKey {
		var cum int64
		buckets := make([]*dto.Bucket, len(h.bounds))
		for i, b := range h.bounds {
			cum += hs.counts[i]
			if hs.counts[i] < 0 || cum < 0 {
				return nil, fmt.Errorf("negative count in bucket le=%g of %s", b, labelKey(hs.labels))
			}
			buckets[i] = &dto.Bucket{UpperBound: proto.Float64(b), CumulativeCount: proto.Uint64(uint64(cum))}
		}
		cum += hs.counts[len(h.bounds)]
		if hs.counts[len(h.bounds)] < 0 || cum < 0 {
			return nil, fmt.Errorf("negative count in bucket le=+Inf of %s", labelKey(hs.labels))
		}
		ms = append(ms, &dto.Metric{Label: hs.labels, Histogram: &dto.Histogram{
			SampleCount: proto.Uint64(uint64(cum)), SampleSum: proto.Float64(hs.sum), Bucket: buckets,
		}})
	}
	sortMetrics(ms)
	return &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: ms}, nil
}

// totalsHistogram is a histogram family read from running totals: rows of
// family name carry a non-cumulative bucket count under "le" (the stored
// upper bound as an integer, or "+Inf"), rows of name+"_sum" the sum of the
// observations. Stored values are divided by scale (1e6 turns microseconds
// into seconds). A stored bound that is not among bounds (the bounds were
// changed) is counted in the first bound above it, which keeps every
// bucket's "≤ bound" true.
func totalsHistogram(s *store.Snapshot, name, help string, bounds []int64, scale float64, allowed ...string) (*dto.MetricFamily, error) {
	exposed := make([]float64, len(bounds))
	for i, b := range bounds {
		exposed[i] = float64(b) / scale
	}
	h := newHistograms(exposed)
	for _, t := range rows(s, name) {
		l, ok, err := mapped(s, t, allowed...)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		i, err := bucketIndex(t.Labels["le"], bounds)
		if err != nil {
			return nil, fmt.Errorf("%s %v: %w", name, t.Labels, err)
		}
		h.series(l).counts[i] += t.Value
	}
	for _, t := range rows(s, name+"_sum") {
		l, ok, err := mapped(s, t, allowed...)
		if err != nil {
			return nil, err
		}
		if ok {
			h.series(l).sum += float64(t.Value) / scale
		}
	}
	return h.family(name, help)
}

// bucketIndex finds the exposed bucket of a stored "le" label.
func bucketIndex(le string, bounds []int64) (int, error) {
	if le == store.InfBucket {
		return len(bounds), nil
	}
	v, err := strconv.ParseInt(le, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bucket bound %q is not an integer", le)
	}
	return sort.Search(len(bounds), func(i int) bool { return bounds[i] >= v }), nil
}

// ageIn is how long before taken t was, in units, never negative (a clock
// a little ahead on another server must not produce negative ages).
func ageIn(taken, t time.Time, unit time.Duration) float64 {
	return math.Max(0, taken.Sub(t).Seconds()/unit.Seconds())
}
