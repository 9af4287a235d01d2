package openmetrics

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
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

// seriesCache keeps the series of every family between refreshes. A
// refresh builds every series anew from a snapshot, but nearly all of them
// carry the same labels as at the refresh before and most the same value:
// so each series keeps its label pairs and the last dto.Metric built for
// it, and a series whose value did not change reuses that metric. Both are
// read-only once built (the encoder and scope filtering only read them), so
// a response still being encoded from an older refresh is never disturbed.
// A series that a refresh does not report is forgotten at the end of it.
//
// One Gather at a time uses a cache (mu); the Endpoint keeps one for its
// lifetime, Gather makes a new one for each call.
type seriesCache struct {
	mu       sync.Mutex
	gen      uint64 // refreshes so far; series.used says which reported a series
	families map[string]*familyCache
	// pairs interns label pairs, shared by every series and family.
	pairs map[[2]string]*dto.LabelPair
	// the scope and pool names of the last refresh: the series remembered
	// by label set (familyCache.bySet) hold good while they stay the same
	scopeNames, poolNames map[int64]string
}

func newSeriesCache() *seriesCache {
	return &seriesCache{families: map[string]*familyCache{}, pairs: map[[2]string]*dto.LabelPair{}}
}

// familyCache is the series of one family by key (also by the key of their
// raw values, when those were not valid UTF-8), and the output order of the
// last refresh, which the next one reuses when it reports the same series:
// sorting is the dearest step of a build otherwise.
type familyCache struct {
	byKey  map[string]*series
	sorted []*series // read-only once stored
	// bySet remembers the series of each running total's label set
	// (store.Total.Set), so that a refresh finds it without building
	// its labels and key again: that was half the CPU of building the
	// families (work_requests: 3,000 totals).
	bySet map[uint32]memo
}

// memo is what a running total's label set gave: its series and, for a
// histogram's bucket, the bucket's index.
type memo struct {
	s      *series
	bucket int
}

// series is one label set of one family.
type series struct {
	// key is the label pairs as name NUL value NUL …, in name order: its
	// identity, and its byte order is the order of the output (pair by
	// pair, name then value, a prefix first; label values never hold NUL,
	// which every input rejects).
	key    string
	labels []*dto.LabelPair
	metric *dto.Metric // the last one built, or nil
	used   uint64      // the refresh that last reported it
	slot   int         // its index in that refresh's build
}

// sweep forgets the series that the current refresh did not report and,
// when some went, the label pairs that only they used.
func (c *seriesCache) sweep() {
	gone := false
	for _, fam := range c.families {
		for k, s := range fam.byKey {
			if s.used != c.gen {
				delete(fam.byKey, k)
				gone = true
			}
		}
		for n, m := range fam.bySet {
			if m.s.used != c.gen {
				delete(fam.bySet, n)
			}
		}
	}
	if !gone {
		return
	}
	c.pairs = map[[2]string]*dto.LabelPair{}
	for _, fam := range c.families {
		for _, s := range fam.byKey {
			for _, lp := range s.labels {
				c.pairs[[2]string{lp.GetName(), lp.GetValue()}] = lp
			}
		}
	}
}

// build is one refresh: the snapshot, its running totals by family, and
// the series cache it works on.
type build struct {
	snap   *store.Snapshot
	cache  *seriesCache
	totals map[string][]store.Total
}

// newBuild starts a refresh on cache (the caller holds cache.mu) and
// indexes the snapshot's totals by family. The store returns them grouped
// by family, so each family is a slice of the snapshot's own; totals in any
// other order are sorted into a copy first.
func newBuild(snap *store.Snapshot, cache *seriesCache) *build {
	cache.gen++
	if !maps.Equal(cache.scopeNames, snap.ScopeNames) || !maps.Equal(cache.poolNames, snap.PoolNames) {
		for _, fam := range cache.families {
			clear(fam.bySet)
		}
		cache.scopeNames, cache.poolNames = maps.Clone(snap.ScopeNames), maps.Clone(snap.PoolNames)
	}
	b := &build{snap: snap, cache: cache, totals: map[string][]store.Total{}}
	if !b.group(snap.Totals) {
		ts := slices.Clone(snap.Totals)
		slices.SortStableFunc(ts, func(a, b store.Total) int { return strings.Compare(a.Family, b.Family) })
		clear(b.totals)
		b.group(ts)
	}
	return b
}

// group indexes ts by family if each family's totals are contiguous.
func (b *build) group(ts []store.Total) bool {
	for i := 0; i < len(ts); {
		j := i + 1
		for j < len(ts) && ts[j].Family == ts[i].Family {
			j++
		}
		if _, seen := b.totals[ts[i].Family]; seen {
			return false
		}
		b.totals[ts[i].Family] = ts[i:j:j]
		i = j
	}
	return true
}

// rows returns the running totals of one family. The order does not
// matter: every family sorts its series.
func (b *build) rows(family string) []store.Total { return b.totals[family] }

// labelValues are the exposed labels of the series being built: at most one
// value for each of the family's label names, kept in name order. A family
// builder owns one and reuses it for every series.
type labelValues struct {
	names  []string
	values []string
	has    []bool
}

func (l *labelValues) index(name string) int {
	for i, n := range l.names {
		if n == name {
			return i
		}
	}
	panic("openmetrics: label " + name + " is not declared by its family")
}

// set gives label name value v. name must be one of the family's labels.
func (l *labelValues) set(name, v string) {
	i := l.index(name)
	l.values[i], l.has[i] = v, true
}

// get returns the value of label name, "" when it has none.
func (l *labelValues) get(name string) string { return l.values[l.index(name)] }

// drop removes label name from the series.
func (l *labelValues) drop(name string) {
	i := l.index(name)
	l.values[i], l.has[i] = "", false
}

func (l *labelValues) clear() {
	clear(l.values)
	clear(l.has)
}

// appendKey appends the series key of the current labels (see series.key).
func (l *labelValues) appendKey(b []byte) []byte {
	for i, n := range l.names {
		if l.has[i] {
			b = append(b, n...)
			b = append(b, 0)
			b = append(b, l.values[i]...)
			b = append(b, 0)
		}
	}
	return b
}

// builder is what gauge and histogram families share: the family's
// labels, its cached series and the series reported so far by this
// refresh, in the order they first appeared.
type builder struct {
	b     *build
	name  string
	l     labelValues
	cache *familyCache
	order []*series
	key   []byte
	err   error
}

func (b *build) builder(family string, names []string) builder {
	names = slices.Clone(names)
	sort.Strings(names)
	f := builder{b: b, name: family, l: labelValues{names: names, values: make([]string, len(names)), has: make([]bool, len(names))},
		order: make([]*series, 0, len(b.rows(family))), key: make([]byte, 0, 256)}
	for i, n := range names {
		if !model.LabelName(n).IsValidLegacy() || strings.HasPrefix(n, "__") || n == "le" {
			f.err = fmt.Errorf("invalid label name %q", n)
		}
		if i > 0 && names[i-1] == n {
			f.err = fmt.Errorf("label %q declared twice", n)
		}
	}
	f.cache = b.cache.families[family]
	if f.cache == nil {
		f.cache = &familyCache{byKey: map[string]*series{}, bySet: map[uint32]memo{}}
		b.cache.families[family] = f.cache
	}
	return f
}

// current returns the series of the current labels, registering it with
// this refresh the first time; fresh says it was not reported yet.
func (f *builder) current() (s *series, fresh bool) { return f.use(f.lookup()) }

// lookup returns the series of the current labels.
func (f *builder) lookup() *series {
	f.key = f.l.appendKey(f.key[:0])
	s := f.cache.byKey[string(f.key)]
	if s == nil {
		s = f.intern()
	}
	return s
}

// use registers s with this refresh the first time; fresh says it was
// not reported yet.
func (f *builder) use(s *series) (_ *series, fresh bool) {
	if s.used == f.b.cache.gen {
		return s, false
	}
	s.used, s.slot = f.b.cache.gen, len(f.order)
	f.order = append(f.order, s)
	return s, true
}

// remembered returns what total t's label set gave at an earlier refresh
// (remember), if anything. It holds as long as the scope and pool names
// are the same (newBuild forgets everything otherwise): the labels of a
// numbered set never change.
func (f *builder) remembered(t store.Total) (memo, bool) {
	if t.Set == 0 {
		return memo{}, false
	}
	m, ok := f.cache.bySet[t.Set]
	return m, ok
}

// remember records what total t's label set gave.
func (f *builder) remember(t store.Total, m memo) {
	if t.Set != 0 {
		f.cache.bySet[t.Set] = m
	}
}

// seriesOf returns the series of running total t: the one remembered for
// its label set, or the one of the labels that fill, then edit (a family's
// own changes, when not nil), give it. ok is false for a total that is
// not reported (see fill). edit must depend on the labels alone.
func (f *builder) seriesOf(t store.Total, edit func()) (s *series, ok bool, err error) {
	if m, hit := f.remembered(t); hit {
		return m.s, true, nil
	}
	if ok, err := f.fill(t); err != nil || !ok {
		return nil, ok, err
	}
	if edit != nil {
		edit()
	}
	s = f.lookup()
	f.remember(t, memo{s: s})
	return s, true, nil
}

// intern adds the series of the current labels (key in f.key) to the
// cache. Values are made valid UTF-8, which the formats require (escaping
// is the encoder's job); two values that differ only in invalid bytes then
// name the same series.
func (f *builder) intern() *series {
	raw := string(f.key)
	for i, v := range f.l.values {
		if f.l.has[i] && !utf8.ValidString(v) {
			f.l.values[i] = strings.ToValidUTF8(v, "\uFFFD")
		}
	}
	key := string(f.l.appendKey(nil))
	s := f.cache.byKey[key]
	if s == nil {
		s = &series{key: key}
		for i, n := range f.l.names {
			if f.l.has[i] {
				s.labels = append(s.labels, f.b.cache.pair(n, f.l.values[i]))
			}
		}
		f.cache.byKey[key] = s
	}
	f.cache.byKey[raw] = s
	return s
}

func (c *seriesCache) pair(name, value string) *dto.LabelPair {
	k := [2]string{name, value}
	lp := c.pairs[k]
	if lp == nil {
		lp = &dto.LabelPair{Name: proto.String(name), Value: proto.String(value)}
		c.pairs[k] = lp
	}
	return lp
}

// fill sets the labels of a running total: scope_id becomes scope (the
// scope's name), worker_pool_id becomes worker_pool, and every other label
// of the family is copied; labels the family does not declare are left
// out, so a label the store may add later never leaks by accident.
//
// It returns ok=false for a row of a scope or pool that no longer exists
// when the row's value is 0: the label set cannot come back, and its name
// is unknown. A non-zero row of an unknown scope or pool is an
// inconsistency in the store and an error.
func (f *builder) fill(t store.Total) (ok bool, err error) {
	f.l.clear()
	for i, name := range f.l.names {
		names, stored, what := f.b.snap.ScopeNames, storedScope, "scope"
		switch name {
		case labelScope:
		case labelPool:
			names, stored, what = f.b.snap.PoolNames, storedPool, "worker pool"
		default:
			f.l.values[i], f.l.has[i] = t.Labels[name]
			continue
		}
		id, present := t.Labels[stored]
		if !present {
			continue
		}
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil {
			return false, fmt.Errorf("%s %v: %s id %q is not a number", t.Family, t.Labels, what, id)
		}
		v, known := names[n]
		if !known {
			if t.Value == 0 {
				return false, nil
			}
			return false, fmt.Errorf("%s %v = %d: no %s with id %d", t.Family, t.Labels, t.Value, what, n)
		}
		f.l.values[i], f.l.has[i] = v, true
	}
	return true, nil
}

// sorted returns the series of this refresh in output order (slots keep
// pointing at their values): the last refresh's order if it reported the
// same series, else a new one.
func (f *builder) sorted() []*series {
	if last := f.cache.sorted; len(last) == len(f.order) && f.err == nil {
		same := true
		for _, s := range last {
			if s.used != f.b.cache.gen {
				same = false
				break
			}
		}
		if same {
			return last
		}
	}
	slices.SortFunc(f.order, func(a, b *series) int { return strings.Compare(a.key, b.key) })
	f.cache.sorted = f.order
	return f.order
}

func (f *builder) newFamily(help string, typ dto.MetricType, n int) *dto.MetricFamily {
	return &dto.MetricFamily{Name: proto.String(f.name), Help: proto.String(help), Type: typ.Enum(), Metric: make([]*dto.Metric, 0, n)}
}

// gauges builds a gauge family. Series that end up with the same labels
// are summed into one, so the output never holds duplicates (for example
// two architectures whose label names collide).
type gauges struct {
	builder
	values []float64 // by series slot
}

// gauges starts gauge family name with the given label names.
func (b *build) gauges(name string, labelNames ...string) *gauges {
	g := &gauges{builder: b.builder(name, labelNames)}
	g.values = make([]float64, 0, cap(g.order))
	return g
}

// add adds v to the series of the current labels (g.l).
func (g *gauges) add(v float64) { g.addTo(g.lookup(), v) }

// addTo adds v to series s.
func (g *gauges) addTo(s *series, v float64) {
	s, fresh := g.use(s)
	if fresh {
		g.values = append(g.values, 0)
	}
	g.values[s.slot] += v
}

// family returns the built family, sorted.
func (g *gauges) family(help string) (*dto.MetricFamily, error) {
	if g.err != nil {
		return nil, g.err
	}
	mf := g.newFamily(help, dto.MetricType_GAUGE, len(g.order))
	for _, s := range g.sorted() {
		v := g.values[s.slot]
		if s.metric == nil || s.metric.GetGauge().GetValue() != v {
			s.metric = &dto.Metric{Label: s.labels, Gauge: &dto.Gauge{Value: proto.Float64(v)}}
		}
		mf.Metric = append(mf.Metric, s.metric)
	}
	return mf, nil
}

// totalsGauge is a gauge family read straight from running totals, with
// the given exposed labels (scope stands for the stored scope_id).
func totalsGauge(b *build, name, help string, labelNames ...string) (*dto.MetricFamily, error) {
	g := b.gauges(name, labelNames...)
	for _, t := range b.rows(name) {
		s, ok, err := g.seriesOf(t, nil)
		if err != nil {
			return nil, err
		}
		if ok {
			g.addTo(s, float64(t.Value))
		}
	}
	return g.family(help)
}

// histograms builds a histogram family with fixed upper bounds (the +Inf
// bucket is implicit: the encoder writes it from the count).
type histograms struct {
	builder
	bounds []float64
	counts []int64 // non-cumulative, len(bounds)+1 per series slot
	sums   []float64
}

// histograms starts histogram family name with the given bounds and label
// names.
func (b *build) histograms(name string, bounds []float64, labelNames ...string) *histograms {
	return &histograms{builder: b.builder(name, labelNames), bounds: bounds}
}

// series returns the bucket counts (non-cumulative, one per bound and one
// past the last) and the sum of the series of the current labels.
func (h *histograms) series() (counts []int64, sum *float64) { return h.seriesAt(h.lookup()) }

// seriesAt is series for series s.
func (h *histograms) seriesAt(s *series) (counts []int64, sum *float64) {
	s, fresh := h.use(s)
	if fresh {
		h.counts = append(h.counts, make([]int64, len(h.bounds)+1)...)
		h.sums = append(h.sums, 0)
	}
	n := len(h.bounds) + 1
	return h.counts[s.slot*n : (s.slot+1)*n], &h.sums[s.slot]
}

// observe counts one observation of v in the series of the current labels.
func (h *histograms) observe(v float64) {
	counts, sum := h.series()
	counts[sort.SearchFloat64s(h.bounds, v)]++ // first bound ≥ v, or +Inf
	*sum += v
}

// family returns the built family, sorted, with cumulative buckets.
func (h *histograms) family(help string) (*dto.MetricFamily, error) {
	if h.err != nil {
		return nil, h.err
	}
	n := len(h.bounds) + 1
	mf := h.newFamily(help, dto.MetricType_HISTOGRAM, len(h.order))
	cum := make([]uint64, len(h.bounds))
	for _, s := range h.sorted() {
		counts, sum := h.counts[s.slot*n:(s.slot+1)*n], h.sums[s.slot]
		var total int64
		for i, c := range counts {
			total += c
			if c < 0 || total < 0 {
				return nil, fmt.Errorf("negative count in bucket le=%s of %s", bound(h.bounds, i), s.key)
			}
			if i < len(cum) {
				cum[i] = uint64(total)
			}
		}
		if !sameHistogram(s.metric, cum, uint64(total), sum) {
			s.metric = newHistogram(s.labels, h.bounds, cum, uint64(total), sum)
		}
		mf.Metric = append(mf.Metric, s.metric)
	}
	return mf, nil
}

func bound(bounds []float64, i int) string {
	if i == len(bounds) {
		return "+Inf"
	}
	return strconv.FormatFloat(bounds[i], 'g', -1, 64)
}

// sameHistogram tells whether m already holds these figures.
func sameHistogram(m *dto.Metric, cum []uint64, count uint64, sum float64) bool {
	if m == nil {
		return false
	}
	h := m.GetHistogram()
	if h.GetSampleCount() != count || h.GetSampleSum() != sum || len(h.Bucket) != len(cum) {
		return false
	}
	for i, b := range h.Bucket {
		if b.GetCumulativeCount() != cum[i] {
			return false
		}
	}
	return true
}

func newHistogram(labels []*dto.LabelPair, bounds []float64, cum []uint64, count uint64, sum float64) *dto.Metric {
	buckets := make([]dto.Bucket, len(bounds))
	values := make([]float64, len(bounds))
	counts := make([]uint64, len(bounds))
	ptrs := make([]*dto.Bucket, len(bounds))
	for i := range bounds {
		values[i], counts[i] = bounds[i], cum[i]
		buckets[i].UpperBound, buckets[i].CumulativeCount = &values[i], &counts[i]
		ptrs[i] = &buckets[i]
	}
	return &dto.Metric{Label: labels, Histogram: &dto.Histogram{
		SampleCount: proto.Uint64(count), SampleSum: proto.Float64(sum), Bucket: ptrs,
	}}
}

// totalsHistogram is a histogram family read from running totals: rows of
// family name carry a non-cumulative bucket count under "le" (the stored
// upper bound as an integer, or "+Inf"), rows of name+"_sum" the sum of the
// observations. Stored values are divided by scale (1e6 turns microseconds
// into seconds). A stored bound that is not among bounds (the bounds were
// changed) is counted in the first bound above it, which keeps every
// bucket's "≤ bound" true.
func totalsHistogram(b *build, name, help string, bounds []int64, scale float64, labelNames ...string) (*dto.MetricFamily, error) {
	exposed := make([]float64, len(bounds))
	for i, x := range bounds {
		exposed[i] = float64(x) / scale
	}
	h := b.histograms(name, exposed, labelNames...)
	for _, t := range b.rows(name) {
		m, hit := h.remembered(t)
		if !hit {
			ok, err := h.fill(t)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			if m.bucket, err = bucketIndex(t.Labels["le"], bounds); err != nil {
				return nil, fmt.Errorf("%s %v: %w", name, t.Labels, err)
			}
			m.s = h.lookup()
			h.remember(t, m)
		}
		counts, _ := h.seriesAt(m.s)
		counts[m.bucket] += t.Value
	}
	for _, t := range b.rows(name + "_sum") {
		s, ok, err := h.seriesOf(t, nil)
		if err != nil {
			return nil, err
		}
		if ok {
			_, sum := h.seriesAt(s)
			*sum += float64(t.Value) / scale
		}
	}
	return h.family(help)
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
