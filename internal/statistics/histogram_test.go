package statistics_test

import (
	"math"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/statistics"
)

// nearestRank is the textbook nearest-rank percentile of values.
func nearestRank(values []int64, p int) int64 {
	s := slices.Clone(values)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[rank-1]
}

// TestQuantileOnBoundsIsExact: observations on bucket bounds give exactly
// the nearest-rank percentiles computed from the raw values.
func TestQuantileOnBoundsIsExact(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for n := 1; n <= 200; n++ {
		var h statistics.Histogram
		values := make([]int64, n)
		for i := range values {
			values[i] = statistics.Bounds[rng.Intn(len(statistics.Bounds))]
			h.Observe(values[i])
		}
		for _, p := range []int{1, 50, 90, 99, 100} {
			q, ok := h.Quantile(p)
			if !ok || q.Over || q.Value != time.Duration(nearestRank(values, p))*time.Microsecond {
				t.Fatalf("n=%d p%d: %v %v, want %d µs", n, p, q, ok, nearestRank(values, p))
			}
		}
	}
}

// TestQuantileErrorBound: for any observations, the percentile read from
// the buckets is never below the true one and at most 28 % above it.
func TestQuantileErrorBound(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for round := 0; round < 300; round++ {
		var h statistics.Histogram
		n := 1 + rng.Intn(500)
		values := make([]int64, n)
		for i := range values {
			// 10 ms to 11 days, spread over the decades
			values[i] = int64(1e4 * math.Pow(10, rng.Float64()*8))
			h.Observe(values[i])
		}
		for _, p := range []int{50, 90, 99} {
			q, _ := h.Quantile(p)
			truth := time.Duration(nearestRank(values, p)) * time.Microsecond
			if q.Value < truth || float64(q.Value) > 1.28*float64(truth) {
				t.Fatalf("p%d = %v, true %v: outside [1, 1.28]×", p, q.Value, truth)
			}
		}
	}
}

func TestQuantileEdges(t *testing.T) {
	var h statistics.Histogram
	if _, ok := h.Quantile(50); ok {
		t.Fatal("a percentile of nothing")
	}
	h.Observe(1)                    // under the first bound
	h.Observe(30 * 24 * 3600 * 1e6) // 30 days: over the last
	if q, _ := h.Quantile(50); q.Over || q.Value != 10*time.Millisecond {
		t.Fatalf("p50 = %+v, want the first bound", q)
	}
	if q, _ := h.Quantile(100); !q.Over || q.Value != time.Duration(statistics.Bounds[len(statistics.Bounds)-1])*time.Microsecond {
		t.Fatalf("p100 = %+v, want over the last bound", q)
	}
	if statistics.Bucket(statistics.Bounds[3]) != 3 || statistics.Bucket(statistics.Bounds[3]+1) != 4 {
		t.Fatal("a value on a bound belongs to that bound's bucket")
	}
	for i := 1; i < len(statistics.Bounds); i++ {
		if r := float64(statistics.Bounds[i]) / float64(statistics.Bounds[i-1]); r <= 1 || r > 1.28 {
			t.Fatalf("bounds %d and %d differ by ×%.3f", statistics.Bounds[i-1], statistics.Bounds[i], r)
		}
	}
}
