package store

import "strconv"

// Bucket upper bounds of the histograms kept as running totals. Each
// observation adds 1 to the first bucket whose bound is ≥ the value (stored
// non-cumulatively under label "le"; "+Inf" past the last bound) and its
// value to family+"_sum". The metrics endpoint makes them cumulative.
var (
	// CollectionSizeBuckets: items per collection.
	CollectionSizeBuckets = []int64{0, 1, 10, 100, 1000, 10000, 100000}
	// ArtifactFileCountBuckets: files per artifact.
	ArtifactFileCountBuckets = []int64{0, 1, 2, 5, 10, 20, 50, 100, 1000}
	// ArtifactFileSizeBuckets: bytes per file.
	ArtifactFileSizeBuckets = []int64{1 << 10, 16 << 10, 256 << 10, 1 << 20, 16 << 20, 256 << 20, 1 << 30, 4 << 30}
	// TaskExecutionBuckets: task run time, in microseconds (exposed in
	// seconds); integers keep running sums exact.
	TaskExecutionBuckets = []int64{1e6, 10e6, 30e6, 60e6, 300e6, 900e6, 1800e6, 3600e6, 3 * 3600e6, 6 * 3600e6}
	// StatisticsBuckets: run time and queue wait in the dashboard's
	// rollups, in microseconds — the R10 series of preferred numbers
	// (1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8 per decade) from 10 ms to
	// 10⁶ s (11.6 days). Neighbouring bounds differ by at most 28 %, the
	// error bound of the percentiles read from them (package statistics).
	StatisticsBuckets = r10(1e4, 1e12)
)

// r10 is the R10 series from lo to hi (both powers of ten), in
// microseconds.
func r10(lo, hi int64) []int64 {
	steps := []int64{100, 125, 160, 200, 250, 315, 400, 500, 630, 800}
	var out []int64
	for d := lo; d < hi; d *= 10 {
		for _, s := range steps {
			out = append(out, d*s/100)
		}
	}
	return append(out, hi)
}

// InfBucket is the "le" label of the bucket past the last bound.
const InfBucket = "+Inf"

// histo is one observation of value in a histogram kept as running totals.
func histo(family string, l Labels, value int64, bounds []int64) []contribution {
	return []contribution{bucket(family, l, value, bounds), {totalKey{family + "_sum", canonicalLabels(l)}, value}}
}

// bucket is the count part of one observation: 1 for the bucket of value
// (label "le" added to l, without copying l). Writers with several
// observations of one label set add their sum to family+"_sum" once.
func bucket(family string, l Labels, value int64, bounds []int64) contribution {
	le := InfBucket
	for _, b := range bounds {
		if value <= b {
			le = strconv.FormatInt(b, 10)
			break
		}
	}
	return contribution{totalKey{family, canonicalWith(l, "le", le)}, 1}
}
