package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RouteUnmatched is the route label of requests that matched no route: the
// 404s and 405s ServeMux answers itself.
// Sharing one label value is what keeps a scan of random paths from adding a
// series per path, the failure that gave one Flask exporter 366k series.
const RouteUnmatched = "unmatched"

// MethodOther is the method label of requests whose method is not one of the
// standard ones. Methods are client input; without this bucket a client could
// create series at will.
const MethodOther = "other"

// HTTPMetrics instruments the API server's handlers with request counts,
// durations and an in-flight gauge, labelled by method, route pattern and
// status code:
//
//	<ns>_<sub>_requests_total{method,route,code}
//	<ns>_<sub>_request_duration_seconds{method,route,code}   (histogram)
//	<ns>_<sub>_requests_in_flight
//	<ns>_<sub>_panics_total{route}
//
// The route label is the net/http.ServeMux pattern that matched
// ("GET /api/1.0/work-requests/{id}/"), never the path, so /work-requests/1
// and /work-requests/2 share one series. Labels follow promhttp: the method
// is lower-case ("get") and the status label is "code".
//
// Typical wiring:
//
//	mux := http.NewServeMux()
//	m.Handle(mux, "GET /api/1.0/work-requests/{id}/", showWorkRequest)
//	m.HandleUninstrumented(mux, "GET /-/healthy", healthy) // probes are noise
//	server.Handler = m.CountUnmatched(mux)
//
// An HTTPMetrics is safe for concurrent use.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
	panics   *prometheus.CounterVec
	logger   *slog.Logger

	// series caches the counter and histogram of each label set, so that
	// a request costs one map lookup instead of hashing and validating its
	// labels twice. The label space is bounded (see the type comment), so
	// the cache is too.
	series sync.Map // seriesKey → *seriesPair
}

type seriesKey struct{ method, route, code string }

type seriesPair struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// HTTPOption adjusts NewHTTPMetrics.
type HTTPOption func(*httpConfig)

type httpConfig struct {
	buckets []float64
	logger  *slog.Logger
}

// DefaultDurationBuckets returns the duration histogram's default buckets:
// client_golang's DefBuckets (5 ms to 10 s) and then 30 s, 1, 2 and 5
// minutes, because an artifact upload or download of a few gigabytes
// takes minutes, and a histogram whose top bucket is 10 s cannot tell a
// slow transfer from a stuck one.
func DefaultDurationBuckets() []float64 {
	return []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
}

// WithDurationBuckets replaces the duration histogram's buckets (by default
// DefaultDurationBuckets), for servers whose latencies fall outside that
// range. Empty b keeps the default.
func WithDurationBuckets(b []float64) HTTPOption {
	return func(c *httpConfig) {
		if len(b) > 0 {
			c.buckets = b
		}
	}
}

// WithPanicLogger sends the panics of instrumented handlers, with their
// stacks, to logger. Without it they are only counted.
func WithPanicLogger(logger *slog.Logger) HTTPOption {
	return func(c *httpConfig) { c.logger = logger }
}

// NewHTTPMetrics creates the request metrics under namespace and subsystem
// (for kiln: "kiln", "http") and registers them with reg. It returns the
// registration error, for instance when two HTTPMetrics share a name in one
// registry, and then registers nothing.
func NewHTTPMetrics(reg prometheus.Registerer, namespace, subsystem string, opts ...HTTPOption) (*HTTPMetrics, error) {
	cfg := httpConfig{buckets: DefaultDurationBuckets()}
	for _, o := range opts {
		o(&cfg)
	}
	labels := []string{"method", "route", "code"}
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Subsystem: subsystem,
			Name:      "requests_total",
			Help:      "HTTP requests answered, by method, route pattern and status code.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Subsystem: subsystem,
			Name:      "request_duration_seconds",
			Help:      "Time from receiving an HTTP request to its handler returning, by method, route pattern and status code.",
			Buckets:   cfg.buckets,
		}, labels),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Subsystem: subsystem,
			Name:      "requests_in_flight",
			Help:      "HTTP requests currently being handled by instrumented routes.",
		}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Subsystem: subsystem,
			Name:      "panics_total",
			Help:      "Handlers that panicked, by route pattern; each request was answered 500 (or cut off, when its answer had begun).",
		}, []string{"route"}),
		logger: cfg.logger,
	}
	if err := registerAll(reg, m.requests, m.duration, m.inFlight, m.panics); err != nil {
		return nil, err
	}
	return m, nil
}

// registerAll registers cs, or on error unregisters those it had registered,
// so a failed constructor leaves the registry as it found it.
func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}

// Handle registers h on mux under pattern, instrumented. It is the usual way
// to add an API route, so that being measured is the default. The route's
// panics_total series starts at 0, so that its first panic is an increase
// an alert sees.
func (m *HTTPMetrics) Handle(mux *http.ServeMux, pattern string, h http.Handler) {
	mux.Handle(pattern, m.Wrap(h))
	m.panics.WithLabelValues(pattern)
}

// HandleUninstrumented registers h on mux under pattern without metrics, for
// routes whose requests would only add noise or mislead: health probes
// scraped every second, long-lived connections (websockets) that would sit in
// the in-flight gauge and the top duration bucket. It also keeps
// CountUnmatched from counting them. Using it, rather than mux.Handle, makes
// the choice visible in the code.
func (m *HTTPMetrics) HandleUninstrumented(mux *http.ServeMux, pattern string, h http.Handler) {
	mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec := outerRecorder(w); rec != nil {
			rec.handled = true
		}
		h.ServeHTTP(w, r)
	}))
}

// Wrap instruments one route's handler. It must sit between the ServeMux
// and the handler (as Handle arranges), because the mux records the matched
// pattern in r.Pattern of the request it passes on. A request that reaches
// Wrap with no pattern is labelled RouteUnmatched.
//
// A handler that panics is a bug: it is counted in panics_total and, with
// code "500", in the request metrics, logged with its stack (see
// WithPanicLogger), and its client gets a 500 (problem+json) instead of a
// dropped connection. When the handler had already begun its answer, the
// connection is cut (panic(http.ErrAbortHandler)), so the client sees an
// error rather than a truncated answer that looks complete. A handler that
// panics with http.ErrAbortHandler itself, the sanctioned way to abort a
// response, is counted as a 500 and not as a panic.
func (m *HTTPMetrics) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Below CountUnmatched, reuse its recorder (and tell it the request
		// is counted here): no second allocation on the hot path.
		rec := outerRecorder(w)
		if rec != nil {
			rec.handled = true
		} else {
			rec = &statusRecorder{ResponseWriter: w, start: time.Now()}
			w = rec
		}
		m.inFlight.Inc()
		done := false
		defer func() {
			m.inFlight.Dec()
			if done {
				return
			}
			p := recover()
			m.observe(r.Method, routeOf(r), http.StatusInternalServerError, time.Since(rec.start))
			if p == http.ErrAbortHandler {
				panic(p)
			}
			m.panicked(rec, r, p)
		}()
		h.ServeHTTP(w, r)
		done = true
		m.observe(r.Method, routeOf(r), rec.code(), time.Since(rec.start))
	})
}

// panicked counts and logs a handler's panic p and answers 500 if it can.
func (m *HTTPMetrics) panicked(rec *statusRecorder, r *http.Request, p any) {
	m.panics.WithLabelValues(routeOf(r)).Inc()
	if m.logger != nil {
		m.logger.Error("panic serving an HTTP request", "method", r.Method, "route", routeOf(r),
			"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	}
	if rec.status != 0 {
		panic(http.ErrAbortHandler) // the answer has begun: cut it off
	}
	rec.Header().Set("Content-Type", "application/problem+json")
	rec.Header().Del("Content-Length")
	rec.WriteHeader(http.StatusInternalServerError)
	io.WriteString(rec, `{"type":"about:blank","title":"Internal Server Error","status":500,"detail":"the server met an unexpected error; it is logged"}`+"\n")
}

// CountUnmatched wraps the whole mux (or the top of the handler chain) so
// that requests no instrumented or opted-out route handled are still
// counted: those the mux answers itself are counted under route
// RouteUnmatched (404, 405) or, for the redirect to a pattern's trailing
// slash, under that pattern; those of routes registered with plain
// mux.Handle under their pattern. Without it, scans and broken clients are
// invisible. Such requests do not enter the in-flight gauge.
//
// Routes learn that CountUnmatched is above them from the ResponseWriter
// they are given: its own, or one that returns it from Unwrap (the
// convention of http.ResponseController). A middleware between the two
// that wraps the writer without an Unwrap method makes such requests count
// twice.
func (m *HTTPMetrics) CountUnmatched(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, start: time.Now(), outer: true}
		next.ServeHTTP(rec, r)
		if !rec.handled {
			// ServeMux sets r.Pattern on the request it was given; when the
			// mux sits directly below, that is r, and the pattern of a route
			// registered without Handle is known. Otherwise it stays empty.
			m.observe(r.Method, routeOf(r), rec.code(), time.Since(rec.start))
		}
	})
}

// outerRecorder finds the recorder of CountUnmatched in w or in the
// writers it wraps, or returns nil.
func outerRecorder(w http.ResponseWriter) *statusRecorder {
	for range 16 {
		if rec, ok := w.(*statusRecorder); ok && rec.outer {
			return rec
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
	return nil
}

func (m *HTTPMetrics) observe(method, route string, code int, d time.Duration) {
	key := seriesKey{methodLabel(method), route, codeLabel(code)}
	p, ok := m.series.Load(key)
	if !ok {
		p, _ = m.series.LoadOrStore(key, &seriesPair{
			requests: m.requests.WithLabelValues(key.method, key.route, key.code),
			duration: m.duration.WithLabelValues(key.method, key.route, key.code),
		})
	}
	pair := p.(*seriesPair)
	pair.requests.Inc()
	pair.duration.Observe(d.Seconds())
}

func routeOf(r *http.Request) string {
	if r.Pattern == "" {
		return RouteUnmatched
	}
	return r.Pattern
}

// methodLabel maps the standard methods to promhttp's lower-case labels and
// everything else, including lower-case spellings (methods are
// case-sensitive), to MethodOther.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet:
		return "get"
	case http.MethodHead:
		return "head"
	case http.MethodPost:
		return "post"
	case http.MethodPut:
		return "put"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	case http.MethodOptions:
		return "options"
	case http.MethodConnect:
		return "connect"
	case http.MethodTrace:
		return "trace"
	}
	return MethodOther
}

func codeLabel(code int) string {
	if code < 100 || code > 999 {
		return "other"
	}
	return strconv.Itoa(code)
}
