package scheduler

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsExistBeforeFirstEvent: every series an alert or a rate() may
// read is exported as 0 from the start — a result that has not happened
// yet is a 0, not an absent series that increase() cannot see go from
// nothing to 1.
func TestMetricsExistBeforeFirstEvent(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{
		"kiln_scheduler_results_total":      2 * 4, // task types × results
		"kiln_scheduler_assignments_total":  2,     // worker types
		"kiln_scheduler_queue_wait_seconds": 2,     // task types
	} {
		if got, err := testutil.GatherAndCount(reg, name); err != nil || got != want {
			t.Errorf("%s: %d series before any event (%v), want %d", name, got, err, want)
		}
	}
}
