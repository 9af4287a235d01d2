package telemetry

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of an outgoing request, the values of the outcome label. They are
// coarse on purpose: enough to alert on a failing dependency and tell "it
// refuses us" (4xx) from "it is broken" (5xx) from "we cannot reach it"
// (error), without a series per status code and service.
const (
	OutcomeSuccess = "success"  // a response with status below 400
	OutcomeHTTP4xx = "http_4xx" // a response with status 400-499
	OutcomeHTTP5xx = "http_5xx" // a response with status 500 or more
	OutcomeError   = "error"    // no response: connection, TLS, timeout, cancellation
)

// OutgoingMetrics counts and times calls kiln makes to other services
// (notifications, S3, webhooks), by the service
// the caller names and the outcome:
//
//	<ns>_outgoing_requests_total{service,outcome}
//	<ns>_outgoing_request_duration_seconds{service,outcome}   (histogram)
//
// The service label is chosen by kiln's code, never derived from the URL, so
// that a misconfigured or user-supplied URL cannot create series. An
// OutgoingMetrics is safe for concurrent use.
type OutgoingMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewOutgoingMetrics creates the outgoing-call metrics under namespace (for
// kiln: "kiln") and registers them with reg, returning the registration
// error if any (and then registering nothing).
func NewOutgoingMetrics(reg prometheus.Registerer, namespace string) (*OutgoingMetrics, error) {
	labels := []string{"service", "outcome"}
	m := &OutgoingMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "outgoing_requests_total",
			Help:      "HTTP requests made to other services, by target service and outcome.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "outgoing_request_duration_seconds",
			Help:      "Time until response headers (or failure) of HTTP requests made to other services, by target service and outcome.",
			Buckets:   prometheus.DefBuckets,
		}, labels),
	}
	if err := registerAll(reg, m.requests, m.duration); err != nil {
		return nil, err
	}
	return m, nil
}

// RoundTripper returns next instrumented under service; a nil next means
// http.DefaultTransport. Use it as an http.Client's Transport.
//
// The counters of all four outcomes for service start at 0 at once, so that
// rate() and ratios work from the first failure instead of from the second.
// The duration runs until the response headers arrive, as RoundTrip returns;
// reading the body is the caller's time.
func (m *OutgoingMetrics) RoundTripper(service string, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	for _, o := range [...]string{OutcomeSuccess, OutcomeHTTP4xx, OutcomeHTTP5xx, OutcomeError} {
		m.requests.WithLabelValues(service, o)
	}
	return &instrumentedTransport{m: m, service: service, next: next}
}

type instrumentedTransport struct {
	m       *OutgoingMetrics
	service string
	next    http.RoundTripper
}

func (t *instrumentedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	outcome := outcomeOf(resp, err)
	t.m.requests.WithLabelValues(t.service, outcome).Inc()
	t.m.duration.WithLabelValues(t.service, outcome).Observe(time.Since(start).Seconds())
	return resp, err
}

func outcomeOf(resp *http.Response, err error) string {
	switch {
	case err != nil || resp == nil:
		return OutcomeError
	case resp.StatusCode >= 500:
		return OutcomeHTTP5xx
	case resp.StatusCode >= 400:
		return OutcomeHTTP4xx
	}
	return OutcomeSuccess
}
