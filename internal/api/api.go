package api

import (
	"log/slog"
	"net/http"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"github.com/kiln-build/kiln/internal/blobs"
	"github.com/kiln-build/kiln/internal/runner/protocol"
	"github.com/kiln-build/kiln/internal/store"
)

// Prefix is the path under which every route of the API lives.
const Prefix = "/api/1.0/"

// DefaultMaxBodyBytes is the request body limit when Options leaves it
// zero: far above any legitimate object of these resources, far below what
// would let one client make the server buffer arbitrary amounts of JSON.
const DefaultMaxBodyBytes = 1 << 20

// Options tunes the API. The zero value is ready to use.
type Options struct {
	// MaxBodyBytes bounds request bodies; a larger body is refused with
	// 413. Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Dispatcher connects the work routes to the scheduler (runner
	// connections, live logs, wake-ups); nil means runners cannot connect.
	Dispatcher Dispatcher
	// Hooks configures the webhook receiver (hooks.go).
	Hooks HookOptions
	// Blobs moves the bytes of artifact files in and out of the file
	// stores; nil makes one for this API alone. A server shares its own
	// with its periodic clean-up.
	Blobs *blobs.Manager
	// Registration bounds the self-registration of runners (workers.go).
	Registration RegistrationOptions
	// Now is the clock of the statistics' windows; time.Now when nil.
	Now func() time.Time
}

// API holds the dependencies of the handlers. It is safe for concurrent
// use; build it once with New.
type API struct {
	st      store.Store
	log     *slog.Logger
	opts    Options
	routes  []Route
	probe   *http.ServeMux // the real routes only, to tell 404 from 405
	pattern map[string]bool
	blobs   *blobs.Manager
	// registrations paces anonymous self-registrations (workers.go).
	registrations *rate.Limiter
}

// Route is one method and path pattern of the API with its handler. The
// pattern uses Go 1.22 ServeMux syntax ("GET /api/1.0/scopes/{id}/{$}");
// it doubles as the route label of request metrics, so it never contains
// client input. Each Handler is complete on its own, authentication
// included, so a server may wrap routes one by one.
type Route struct {
	Pattern string
	Handler http.Handler
}

// New builds the API over st. A nil logger discards logs; the logger only
// receives server-side failures (the details of 500 answers), never
// secrets or request bodies.
func New(st store.Store, logger *slog.Logger, opts Options) *API {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Blobs == nil {
		opts.Blobs = blobs.New(st, blobs.Options{Logger: logger})
	}
	opts.Registration.setDefaults()
	a := &API{st: st, log: logger, opts: opts, probe: http.NewServeMux(), pattern: map[string]bool{}, blobs: opts.Blobs,
		registrations: opts.Registration.limiter()}
	for _, group := range [][]Route{
		a.scopeRoutes(), a.workspaceRoutes(), a.memberRoutes(), a.userRoutes(), a.identityRoutes(),
		a.groupRoutes(), a.tokenRoutes(), a.fileStoreRoutes(), a.assetRoutes(), a.collectionRoutes(),
		a.itemRoutes(), a.workRequestRoutes(), a.workerRoutes(), a.artifactRoutes(),
		a.workflowTemplateRoutes(), a.workflowRoutes(), a.hookRoutes(), a.statisticsRoutes(), a.poolRoutes(),
	} {
		a.routes = append(a.routes, group...)
	}
	for _, r := range a.routes {
		a.probe.Handle(r.Pattern, r.Handler)
		a.pattern[r.Pattern] = true
	}
	a.routes = append(a.routes, Route{Prefix, http.HandlerFunc(a.unmatched)})
	return a
}

// Timing says how long a route's connection may take, so that the server
// can bound slow clients route by route (see server/deadlines.go).
type Timing int

// The timings of routes.
const (
	// TimingRequest is an ordinary request: its body is read and its
	// answer written within a fixed time.
	TimingRequest Timing = iota
	// TimingTransfer moves file content, for as long as that takes while
	// it makes progress: uploads, downloads, logs.
	TimingTransfer
	// TimingStream is a connection that lives as long as it is used, and
	// watches itself (the runners' WebSocket and its heartbeats).
	TimingStream
)

// routeTimings are the routes that are not TimingRequest.
var routeTimings = map[string]Timing{
	"PUT " + Prefix + "artifacts/{id}/files/{path...}": TimingTransfer,
	"GET " + Prefix + "artifacts/{id}/files/{path...}": TimingTransfer,
	"GET " + Prefix + "work-requests/{id}/logs/{$}":    TimingTransfer,
	"GET " + protocol.Path + "{$}":                     TimingStream,
}

// TimingOf returns the timing of a route pattern of Routes().
func TimingOf(pattern string) Timing { return routeTimings[pattern] }

// now is the API's clock.
func (a *API) now() time.Time {
	if a.opts.Now != nil {
		return a.opts.Now()
	}
	return time.Now()
}

// Routes lists every route of the API, the catch-all Prefix route (which
// answers 404 or 405 as a problem) last. The slice is a copy.
func (a *API) Routes() []Route { return slices.Clone(a.routes) }

// Handler serves all routes on a fresh ServeMux, for tests and for servers
// that need no per-route instrumentation.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, r := range a.routes {
		mux.Handle(r.Pattern, r.Handler)
	}
	return mux
}
