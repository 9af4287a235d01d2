package telemetry

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of an incoming event, the values of the outcome label of
// EventMetrics. They separate what needs an operator (rejected: bad
// signature or payload, failed: kiln's fault) from normal traffic.
const (
	EventProcessed = "processed" // acted upon
	EventIgnored   = "ignored"   // valid, but nothing to do (e.g. an event type kiln does not use)
	EventRejected  = "rejected"  // refused: bad signature, malformed payload
	EventFailed    = "failed"    // accepted but handling it failed
)

// MaxEventTypesPerSource caps the distinct type label values kept per
// source. Event types come from the sender (a webhook header), so without a
// cap a sender could create series at will; types beyond the cap, and types
// that do not look like identifiers, are counted as "other".
const MaxEventTypesPerSource = 32

// EventMetrics counts incoming events (webhooks) by source, type and outcome:
//
//	<ns>_incoming_events_total{source,type,outcome}
//
// so that a broken integration shows as a rising rejected or failed rate.
// The source is chosen by kiln's code (e.g. "github"); the type may come from
// the sender and is bounded. An EventMetrics is safe for concurrent use.
type EventMetrics struct {
	events *prometheus.CounterVec

	mu    sync.Mutex
	types map[string]map[string]bool // source → event types seen
}

// NewEventMetrics creates the incoming-event counter under namespace (for
// kiln: "kiln") and registers it with reg, returning the registration error.
func NewEventMetrics(reg prometheus.Registerer, namespace string) (*EventMetrics, error) {
	m := &EventMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "incoming_events_total",
			Help:      "Incoming events (webhooks) handled, by source, event type and outcome.",
		}, []string{"source", "type", "outcome"}),
		types: make(map[string]map[string]bool),
	}
	if err := reg.Register(m.events); err != nil {
		return nil, err
	}
	return m, nil
}

// Observe counts one event of eventType from source with outcome, one of
// EventProcessed, EventIgnored, EventRejected or EventFailed (anything else
// is counted as "other").
func (m *EventMetrics) Observe(source, eventType, outcome string) {
	switch outcome {
	case EventProcessed, EventIgnored, EventRejected, EventFailed:
	default:
		outcome = "other"
	}
	m.events.WithLabelValues(source, m.boundType(source, eventType), outcome).Inc()
}

// boundType returns eventType, or "other" when it is malformed or source
// already has MaxEventTypesPerSource types.
func (m *EventMetrics) boundType(source, eventType string) string {
	if !isEventTypeName(eventType) {
		return "other"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := m.types[source]
	if seen[eventType] {
		return eventType
	}
	if len(seen) >= MaxEventTypesPerSource {
		return "other"
	}
	if seen == nil {
		seen = make(map[string]bool)
		m.types[source] = seen
	}
	seen[eventType] = true
	return eventType
}

// isEventTypeName accepts short names such as "push", "pull_request.opened"
// (GitHub) or "Merge Request Hook" (GitLab), and nothing with control
// characters, quotes or other punctuation.
func isEventTypeName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !isASCIIAlnum(r) && r != '_' && r != '-' && r != '.' && r != ':' && r != ' ' {
			return false
		}
	}
	return true
}
