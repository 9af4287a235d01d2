package openmetrics

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"golang.org/x/sync/singleflight"

	"github.com/kiln-build/kiln/internal/store"
)

// Source is where the endpoint reads its figures: one consistent snapshot
// per refresh. *store.SQL satisfies it. Implementations must be safe for
// concurrent use; the endpoint never calls Snapshot for two refreshes at
// once while caching is on, but does with caching off.
type Source interface {
	Snapshot(ctx context.Context) (*store.Snapshot, error)
}

// DefaultCacheTTL is the cache lifetime kiln's server configures by default
// (docs/architecture.md#public-endpoint: "a short, configurable time (default 30 s)"). Options.CacheTTL
// has no implicit default, so that 0 can mean "off".
const DefaultCacheTTL = 30 * time.Second

// DefaultRefreshTimeout bounds one refresh when Options.RefreshTimeout is
// 0.
const DefaultRefreshTimeout = time.Minute

// Options configure the endpoint. The zero value is valid: no caching, no
// scope restriction, the default logger and the wall clock.
type Options struct {
	// CacheTTL is how long the responses encoded from one snapshot are
	// served before the next scrape refreshes them; concurrent scrapes
	// during a refresh wait for that one refresh instead of starting their
	// own. Cached responses carry an ETag. 0 (or less) turns caching off:
	// every scrape reads its own snapshot. Use DefaultCacheTTL for the
	// server default.
	CacheTTL time.Duration

	// ScopeOf tells, for a request, whether its credentials restrict it to
	// one scope. With a restriction, families with a scope label report
	// only that scope's series; scope-less families are unchanged. An
	// error (a bad or disabled token) answers 401 without figures. nil
	// means every request sees the whole farm (the endpoint is public).
	ScopeOf func(r *http.Request) (scopeID int64, restricted bool, err error)

	// RefreshTimeout bounds one refresh (snapshot and build). A shared
	// refresh does not stop when the scrape that started it goes away, so
	// the scrapes waiting for it still get their answer. Default
	// DefaultRefreshTimeout.
	RefreshTimeout time.Duration

	// Logger receives failing families and snapshot errors; the response
	// never carries them (the endpoint is public). Default slog.Default().
	Logger *slog.Logger

	// Now is the clock of the cache, for tests. Default time.Now.
	Now func() time.Time
}

// Endpoint serves the public metrics and the service status from one cache,
// so that both answer from the same snapshot. It is safe for concurrent
// use.
type Endpoint struct {
	src     Source
	ttl     time.Duration
	timeout time.Duration
	scopeOf func(*http.Request) (int64, bool, error)
	log     *slog.Logger
	now     func() time.Time

	group  singleflight.Group
	cached atomic.Pointer[scrape]
	maxAge []string   // the Cache-Control header's value with caching on
	ages   [][]string // the Age header's values, by second (ageHeader)
	mu     sync.Mutex
	sizes  map[variant]int // body size of each variant at the last refresh

	series    *seriesCache
	encodings *encodings
	refreshes atomic.Uint64 // numbers each refresh, for encodings
	gzips     sync.Pool     // *gzip.Writer
	// bodies and gzBodies recycle the bodies of uncached scrapes (CacheTTL
	// 0), each of which answers one request: a body is the size of the
	// whole exposition, about a third of what such a scrape allocates.
	bodies, gzBodies bufferPool
}

// scrape is everything derived from one snapshot; it is read-only once
// built and shared by every response served from it, except for the
// encoded responses, which it gains as scrapers ask for them.
type scrape struct {
	fetched  time.Time // Options.Now when the snapshot was read
	taken    time.Time // the snapshot's own time
	refresh  uint64    // its number among the endpoint's refreshes
	families []*dto.MetricFamily
	scopes   map[int64]string
	etags    bool // responses carry an ETag (caching is on)

	mu        sync.Mutex
	responses map[variant]*response
}

// New returns an Endpoint reading from src. Mount its ServeHTTP at
// GET /api/1.0/open-metrics/ and ServiceStatus() at
// GET /api/1.0/service-status/.
func New(src Source, opts Options) *Endpoint {
	e := &Endpoint{src: src, ttl: opts.CacheTTL, timeout: opts.RefreshTimeout, scopeOf: opts.ScopeOf,
		log: opts.Logger, now: opts.Now, sizes: map[variant]int{}, series: newSeriesCache(),
		encodings: newEncodings()}
	if e.timeout <= 0 {
		e.timeout = DefaultRefreshTimeout
	}
	e.maxAge = header("max-age=" + strconv.Itoa(int(e.ttl/time.Second)))
	for i := range min(int(e.ttl/time.Second), 3600) + 1 {
		e.ages = append(e.ages, header(strconv.Itoa(i)))
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.now == nil {
		e.now = time.Now
	}
	return e
}

// NewHandler returns the handler of GET /api/1.0/open-metrics/: every
// family of docs/architecture.md#public-endpoint from one snapshot, in OpenMetrics 1.0.0 when the
// scraper asks for it (Accept: application/openmetrics-text) and in the
// Prometheus text format 0.0.4 otherwise. Use New instead to share the
// cache with the service-status handler.
func NewHandler(src Source, opts Options) http.Handler { return New(src, opts) }

// NewServiceStatusHandler returns the handler of GET /api/1.0/service-status/
// on its own cache; see Endpoint.ServiceStatus.
func NewServiceStatusHandler(src Source, opts Options) http.Handler {
	return New(src, opts).ServiceStatus()
}

// ServeHTTP serves the metrics. It answers 405 to methods other than GET
// and HEAD, 401 when Options.ScopeOf rejects the credentials and 500 when
// no snapshot can be read; a family that fails to build or encode is
// logged and left out, never failing the scrape.
//
// The body of each format and scope restriction is encoded once per
// refresh and shared by every scrape it answers, gzip-compressed once too
// for the scrapers that accept it (Prometheus does); see response.go.
func (e *Endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sc, res, ok := e.prepare(w, r)
	if !ok {
		return
	}
	format := negotiate(r.Header)
	v := variant{format: string(format), restriction: res}
	resp := sc.response(v, func() []byte { return e.encodeMetrics(sc, format, v) })
	e.write(w, r, resp)
	if e.ttl <= 0 {
		// no other request can be answered from an uncached scrape
		e.bodies.put(resp.body)
		e.gzBodies.put(resp.gz)
	}
}

// encodeMetrics encodes the families of sc that the variant's restriction
// may see in format, re-encoding only the series that changed since the
// refresh before (encodings). A family that fails to encode is logged and
// left out.
func (e *Endpoint) encodeMetrics(sc *scrape, format expfmt.Format, v variant) []byte {
	body := bytes.NewBuffer(e.bodies.get())
	body.Grow(e.sizeHint(v))
	err := e.encodings.encode(body, filterScope(sc.families, v.restriction), format, sc.refresh, func(mf *dto.MetricFamily, err error) {
		e.log.Error("open-metrics: cannot encode family, leaving it out", "family", mf.GetName(), "error", err)
	})
	if err != nil { // OpenMetrics: # EOF
		e.log.Error("open-metrics: finalize", "error", err)
	}
	e.noteSize(v, body.Len())
	return body.Bytes()
}

// negotiate picks the exposition format: OpenMetrics 1.0.0 when the
// scraper accepts OpenMetrics (any version: the encoder writes the same
// 1.0.0 text for all of them), otherwise the text format 0.0.4, also when
// the scraper would prefer protobuf, which docs/architecture.md#public-endpoint does not offer on this
// endpoint. The escaping scheme the scraper asked for is kept.
//
// A scraper sends the same Accept header at every scrape, and parsing it
// costs more than the rest of a cached answer, so the answers for the
// first few distinct headers are remembered.
func negotiate(h http.Header) expfmt.Format {
	accept := h.Get("Accept")
	if f, ok := negotiated.Load(accept); ok {
		return f.(expfmt.Format)
	}
	f := negotiateAccept(h)
	if negotiatedCount.Add(1) <= maxNegotiated {
		negotiated.Store(accept, f)
	}
	return f
}

// negotiated maps Accept headers to formats, for at most maxNegotiated
// headers (clients choose them, so they must not grow memory without
// bound).
var (
	negotiated      sync.Map
	negotiatedCount atomic.Int32
)

const maxNegotiated = 64

func negotiateAccept(h http.Header) expfmt.Format {
	f := expfmt.NegotiateIncludingOpenMetrics(h)
	switch f.FormatType() {
	case expfmt.TypeOpenMetrics:
		return expfmt.FmtOpenMetrics_1_0_0.WithEscapingScheme(f.ToEscapingScheme())
	case expfmt.TypeTextPlain:
		return f
	}
	return expfmt.FmtText.WithEscapingScheme(f.ToEscapingScheme())
}

// restriction is a request's view: all scopes, or one scope by name ("" for
// a scope that no longer exists, which matches no series).
type restriction struct {
	restricted bool
	name       string
}

// prepare does what both handlers share: method check, authentication,
// the (cached) scrape and the cache headers. It has answered the request
// itself when it returns false.
func (e *Endpoint) prepare(w http.ResponseWriter, r *http.Request) (*scrape, restriction, bool) {
	var res restriction
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return nil, res, false
	}
	var scopeID int64
	if e.scopeOf != nil {
		var err error
		scopeID, res.restricted, err = e.scopeOf(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Token realm="kiln"`)
			http.Error(w, "invalid or disabled token", http.StatusUnauthorized)
			return nil, res, false
		}
	}
	now := e.now()
	sc, err := e.current(r.Context(), now)
	if err != nil {
		if r.Context().Err() == nil {
			e.log.Error("open-metrics: cannot read the metrics snapshot", "error", err)
		}
		http.Error(w, "metrics are unavailable, see the server log", http.StatusInternalServerError)
		return nil, res, false
	}
	if res.restricted {
		res.name = sc.scopes[scopeID]
	}
	h := w.Header() // filled directly, see write
	h["Vary"] = varyHeader
	if e.ttl > 0 {
		// max-age counts from the snapshot, Age says how old it already
		// is: a cache keeps it for max-age − Age more seconds (RFC 9111).
		h["Cache-Control"] = e.maxAge
		h["Age"] = e.ageHeader(int(max(0, now.Sub(sc.fetched)) / time.Second))
	} else {
		h["Cache-Control"] = noStoreHeader
	}
	return sc, res, true
}

// current returns the scrape to answer from: the cached one while it is
// fresh, else a new one; concurrent callers share one refresh.
func (e *Endpoint) current(ctx context.Context, now time.Time) (*scrape, error) {
	if e.ttl <= 0 {
		ctx, cancel := context.WithTimeout(ctx, e.timeout)
		defer cancel()
		return e.refresh(ctx)
	}
	if sc := e.fresh(now); sc != nil {
		return sc, nil
	}
	ch := e.group.DoChan("scrape", func() (any, error) {
		if sc := e.fresh(e.now()); sc != nil {
			return sc, nil // refreshed while this caller waited for the lock
		}
		// The refresh outlives the scrape that started it: others wait
		// for it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.timeout)
		defer cancel()
		sc, err := e.refresh(rctx)
		if err != nil {
			return nil, err
		}
		e.cached.Store(sc)
		return sc, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*scrape), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fresh returns the cached scrape if it is younger than the TTL at now.
func (e *Endpoint) fresh(now time.Time) *scrape {
	if sc := e.cached.Load(); sc != nil && now.Sub(sc.fetched) < e.ttl {
		return sc
	}
	return nil
}

// refresh reads a snapshot and builds every family from it.
func (e *Endpoint) refresh(ctx context.Context) (*scrape, error) {
	fetched, n := e.now(), e.refreshes.Add(1)
	snap, err := e.src.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	if snap == nil {
		return nil, errors.New("the source returned no snapshot")
	}
	fams, err := gatherCached(snap, e.series)
	if err != nil {
		e.log.Error("open-metrics: some families failed and are left out", "error", err)
	}
	return &scrape{fetched: fetched, taken: snap.Taken, refresh: n, families: fams, scopes: snap.ScopeNames,
		etags: e.ttl > 0, responses: map[variant]*response{}}, nil
}

// filterScope keeps, with a restriction, only the series of the
// restricted scope in families with a scope label, and every series of the
// others; families left without series are dropped. The cached families
// are not modified.
func filterScope(fams []*dto.MetricFamily, res restriction) []*dto.MetricFamily {
	if !res.restricted {
		return fams
	}
	out := make([]*dto.MetricFamily, 0, len(fams))
	for _, mf := range fams {
		var keep []*dto.Metric
		for _, m := range mf.Metric {
			if scope, ok := labelValue(m, labelScope); !ok || scope == res.name {
				keep = append(keep, m)
			}
		}
		if len(keep) == 0 {
			continue
		}
		if len(keep) == len(mf.Metric) {
			out = append(out, mf)
			continue
		}
		out = append(out, &dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type, Unit: mf.Unit, Metric: keep})
	}
	return out
}

// labelValue returns the value of label name of m.
func labelValue(m *dto.Metric, name string) (string, bool) {
	for _, lp := range m.Label {
		if lp.GetName() == name {
			return lp.GetValue(), true
		}
	}
	return "", false
}
