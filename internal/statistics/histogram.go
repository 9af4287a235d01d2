package statistics

import (
	"sort"
	"time"

	"github.com/kiln-build/kiln/internal/store"
)

// Histogram counts observations (run times or queue waits) in the
// rollups' fixed buckets, store.StatisticsBuckets: Counts[i] is the number
// of observations v with Bounds[i-1] < v ≤ Bounds[i] (microseconds);
// Counts[len(Bounds)] those above the last bound. Histograms of any
// groups and days add up exactly, which is why the rollups keep them
// rather than percentiles.
type Histogram struct {
	Counts []int64
}

// Bounds are the buckets' upper bounds, in microseconds.
var Bounds = store.StatisticsBuckets

// Bucket is the index of the bucket of a value in microseconds: the first
// bound at or above it, or the overflow bucket.
func Bucket(us int64) int {
	return sort.Search(len(Bounds), func(i int) bool { return Bounds[i] >= us })
}

func (h *Histogram) grow() {
	if h.Counts == nil {
		h.Counts = make([]int64, len(Bounds)+1)
	}
}

// AddBucket adds n observations to bucket i.
func (h *Histogram) AddBucket(i int, n int64) {
	h.grow()
	h.Counts[i] += n
}

// Observe adds one observation of us microseconds.
func (h *Histogram) Observe(us int64) { h.AddBucket(Bucket(us), 1) }

// Merge adds o's observations.
func (h *Histogram) Merge(o Histogram) {
	if o.Counts == nil {
		return
	}
	h.grow()
	for i, n := range o.Counts {
		h.Counts[i] += n
	}
}

// Count is the number of observations.
func (h Histogram) Count() int64 {
	var n int64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// Quantile is the p-th percentile (p from 1 to 100) by the nearest-rank
// method, read from the buckets: the observation of rank ⌈p·n/100⌉ in
// ascending order is in some bucket, and the answer is that bucket's upper
// bound. It is therefore never below the true nearest-rank percentile and
// at most 28 % above it (the widest step between neighbouring bounds);
// it is exact when the observation sits on a bound. Values at or under the
// first bound (10 ms) answer that bound. An observation in the overflow
// bucket answers the last bound with Over set: "more than 11.6 days".
// ok is false when there are no observations.
func (h Histogram) Quantile(p int) (q Quantile, ok bool) {
	n := h.Count()
	if n == 0 || p < 1 || p > 100 {
		return Quantile{}, false
	}
	rank := (int64(p)*n + 99) / 100 // ⌈p·n/100⌉, in integers
	var cum int64
	for i, c := range h.Counts {
		cum += c
		if cum >= rank {
			if i == len(Bounds) {
				return Quantile{Value: us(Bounds[len(Bounds)-1]), Over: true}, true
			}
			return Quantile{Value: us(Bounds[i])}, true
		}
	}
	panic("statistics: rank beyond the count")
}

// Quantile is a percentile read from a histogram.
type Quantile struct {
	// Value is the upper bound of the bucket of the percentile's
	// observation.
	Value time.Duration
	// Over says that the observation is beyond the last bound, Value.
	Over bool
}

func us(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
