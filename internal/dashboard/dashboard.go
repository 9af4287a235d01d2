package dashboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/store"
)

// DefaultSessionLifetime is how long a sign-in lasts: a working week, so
// that a dashboard left open on a wall screen does not ask every morning.
// A session ends earlier when its visitor signs out or its token is
// disabled, expires or is deleted.
const DefaultSessionLifetime = 7 * 24 * time.Hour

// Options tunes the dashboard. The zero value is ready to use.
type Options struct {
	// SessionLifetime bounds a sign-in; DefaultSessionLifetime when 0.
	SessionLifetime time.Duration
	// Logger receives server-side failures (the details behind a 500
	// page); nil discards them.
	Logger *slog.Logger
	// Now is the clock of ages and windows; time.Now when nil.
	Now func() time.Time
}

// Dashboard serves the pages. It is safe for concurrent use.
type Dashboard struct {
	st     store.Store
	api    *api.API
	opts   Options
	log    *slog.Logger // failures behind 500 pages
	pages  pages
	assets *assets
	cop    *http.CrossOriginProtection
}

// New builds the dashboard over st, answering downloads and logs through
// a (the same API the server serves, so that both decide alike).
func New(st store.Store, a *api.API, opts Options) (*Dashboard, error) {
	if opts.SessionLifetime <= 0 {
		opts.SessionLifetime = DefaultSessionLifetime
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	as, err := loadAssets()
	if err != nil {
		return nil, err
	}
	d := &Dashboard{st: st, api: a, opts: opts, log: logger, assets: as, cop: http.NewCrossOriginProtection()}
	if d.pages, err = parsePages(d.funcs()); err != nil {
		return nil, err
	}
	d.cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.serve(w, r, func(v *visit) error {
			return &pageError{status: http.StatusForbidden, msg: "This form was sent from another site; kiln accepts forms from its own pages only."}
		})
	}))
	return d, nil
}

// Routes lists the dashboard's routes, each a complete handler, for the
// server to mount (and instrument) beside the API's. Patterns are fixed
// strings, fit to label request metrics.
func (d *Dashboard) Routes() []api.Route {
	page := func(fn func(*visit) error) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { d.serve(w, r, fn) })
	}
	form := func(fn func(*visit) error) http.Handler { return d.cop.Handler(page(fn)) }
	return []api.Route{
		{Pattern: "GET /{$}", Handler: page(d.overview)},
		{Pattern: "GET /scopes/{id}/{$}", Handler: page(d.scope)},
		{Pattern: "GET /workspaces/{id}/{$}", Handler: page(d.workspace)},
		{Pattern: "GET /work-requests/{id}/{$}", Handler: page(d.workRequest)},
		{Pattern: "GET /work-requests/{id}/logs/{$}", Handler: http.HandlerFunc(d.logs)},
		{Pattern: "GET /artifacts/{id}/files/{path...}", Handler: http.HandlerFunc(d.download)},
		{Pattern: "GET /workers/{$}", Handler: page(d.workers)},
		{Pattern: "GET /statistics/{$}", Handler: page(d.statistics)},
		{Pattern: "GET /sign-in/{$}", Handler: page(d.signInForm)},
		{Pattern: "POST /sign-in/{$}", Handler: form(d.signIn)},
		{Pattern: "POST /sign-out/{$}", Handler: form(d.signOut)},
		{Pattern: "GET " + staticPrefix + "{name}", Handler: http.HandlerFunc(d.static)},
		{Pattern: "GET /favicon.ico", Handler: http.HandlerFunc(d.favicon)},
	}
}

// Handler serves all routes on a fresh ServeMux, for tests.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, r := range d.Routes() {
		mux.Handle(r.Pattern, r.Handler)
	}
	return mux
}

// visit is one request to a page: who asks, and the answer being built.
type visit struct {
	d *Dashboard
	w http.ResponseWriter
	r *http.Request
	// p is the signed-in principal, nil for anonymous visitors; sess
	// its session.
	p      *store.Principal
	sess   *store.Session
	viewer *store.Viewer
	now    time.Time
}

func (v *visit) ctx() context.Context { return v.r.Context() }

// signedIn reports whether a user is signed in. Only users' tokens open
// sessions, so a signed-in visitor is always a user.
func (v *visit) signedIn() bool { return v.p != nil }

// pageError is an error that knows its page: the status and what to tell
// the visitor.
type pageError struct {
	status int
	msg    string
}

func (e *pageError) Error() string { return e.msg }

// notFound is the answer about anything the visitor cannot see or that
// does not exist: the same words either way.
func notFound(what string) error {
	return &pageError{status: http.StatusNotFound, msg: fmt.Sprintf("There is no %s here, or you may not see it.", what)}
}

// badRequest blames one query parameter.
func badRequest(format string, args ...any) error {
	return &pageError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// serve runs fn as a page: security headers, the visitor's session, and
// the error page when fn fails.
func (d *Dashboard) serve(w http.ResponseWriter, r *http.Request, fn func(*visit) error) {
	secure(w.Header())
	w.Header().Set("Cache-Control", "no-store")
	v := &visit{d: d, w: w, r: r, now: d.opts.Now().UTC()}
	err := v.resolveSession()
	if err == nil {
		v.viewer = api.ViewerOf(v.p)
		err = fn(v)
	}
	if err != nil {
		v.fail(err)
	}
}

// fail renders the error page of err.
func (v *visit) fail(err error) {
	var pe *pageError
	switch {
	case errors.As(err, &pe):
	case errors.Is(err, store.ErrNotFound):
		pe = notFound("such page").(*pageError)
	default:
		var fe *store.FieldError
		if errors.As(err, &fe) && fe.Kind == store.Invalid {
			pe = &pageError{status: http.StatusBadRequest, msg: fe.Error()}
			break
		}
		if v.ctx().Err() != nil {
			return // the visitor went away
		}
		v.d.log.ErrorContext(v.ctx(), "dashboard page failed", "route", v.r.Pattern, "path", v.r.URL.Path, "err", err)
		pe = &pageError{status: http.StatusInternalServerError, msg: "Something went wrong on the server; its log has the details."}
	}
	v.render(pe.status, "error", errorPage{Status: pe.status, Title: http.StatusText(pe.status), Message: pe.msg})
}

// secure sets the headers every answer of the dashboard carries. The
// policy allows scripts, styles and images from the dashboard itself
// only: no inline script or style, no framing, forms to itself only.
func secure(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
}

// contentSecurityPolicy is the policy of every page.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
