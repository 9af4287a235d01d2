package statistics_test

import (
	"fmt"
	"time"

	"github.com/kiln-build/kiln/internal/statistics"
)

// Percentiles are read from the rollups' buckets: the upper bound of the
// bucket that holds the nearest-rank observation.
func ExampleHistogram_Quantile() {
	var h statistics.Histogram
	for _, d := range []time.Duration{2 * time.Second, 5 * time.Second, 7 * time.Second, 10 * time.Second, 3 * time.Minute} {
		h.Observe(d.Microseconds())
	}
	for _, p := range []int{50, 90} {
		q, _ := h.Quantile(p)
		fmt.Printf("p%d ≤ %v\n", p, q.Value)
	}
	// Output:
	// p50 ≤ 8s
	// p90 ≤ 3m20s
}

// A window is whole UTC days up to today.
func ExampleParseWindow() {
	now := time.Date(2026, 12, 1, 15, 4, 0, 0, time.UTC)
	w, _ := statistics.ParseWindow("7d", now)
	fmt.Println(w.From.Format(time.DateOnly), "to", w.Last().Format(time.DateOnly), w.Days(), "days")
	// Output: 2026-11-25 to 2026-12-01 7 days
}
