package telemetry

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestEventMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewEventMetrics(reg, "kiln")
	if err != nil {
		t.Fatal(err)
	}
	m.Observe("github", "push", EventProcessed)
	m.Observe("github", "push", EventProcessed)
	m.Observe("github", "pull_request.opened", EventIgnored)
	m.Observe("gitlab", "Merge Request Hook", EventProcessed)
	m.Observe("github", "push", EventRejected)
	m.Observe("github", "push", "exploded")                   // unknown outcome
	m.Observe("github", `x"}`+"\n"+`evil{a="b`, EventFailed)  // hostile type
	m.Observe("github", strings.Repeat("a", 65), EventFailed) // too long

	tests := []struct {
		source, typ, outcome string
		want                 float64
	}{
		{"github", "push", EventProcessed, 2},
		{"github", "pull_request.opened", EventIgnored, 1},
		{"gitlab", "Merge Request Hook", EventProcessed, 1},
		{"github", "push", EventRejected, 1},
		{"github", "push", "other", 1},
		{"github", "other", EventFailed, 2},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(m.events.WithLabelValues(tt.source, tt.typ, tt.outcome)); got != tt.want {
			t.Errorf("%s/%s/%s = %v, want %v", tt.source, tt.typ, tt.outcome, got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(m.events); n != len(tests) {
		t.Errorf("%d series, want %d", n, len(tests))
	}
}

func TestEventMetricsTypeCap(t *testing.T) {
	m, err := NewEventMetrics(prometheus.NewRegistry(), "kiln")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		m.Observe("github", fmt.Sprintf("type%d", i), EventProcessed)
	}
	m.Observe("gitlab", "push", EventProcessed) // another source has its own budget
	if n := testutil.CollectAndCount(m.events); n != MaxEventTypesPerSource+2 {
		t.Errorf("%d series after 1000 distinct types, want %d (cap + other + gitlab)", n, MaxEventTypesPerSource+2)
	}
	if got := testutil.ToFloat64(m.events.WithLabelValues("github", "other", EventProcessed)); got != 1000-MaxEventTypesPerSource {
		t.Errorf("other = %v, want %d", got, 1000-MaxEventTypesPerSource)
	}
	// Known types keep their own series after the cap is reached.
	m.Observe("github", "type0", EventProcessed)
	if got := testutil.ToFloat64(m.events.WithLabelValues("github", "type0", EventProcessed)); got != 2 {
		t.Errorf("type0 = %v, want 2", got)
	}
}
