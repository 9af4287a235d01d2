package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MuxOption adjusts the handler built by NewInternalMux.
type MuxOption func(*muxConfig)

type muxConfig struct {
	logger        *slog.Logger
	pprof         bool
	scrapeTimeout time.Duration
	extra         []extraRoute
}

type extraRoute struct {
	pattern string
	handler http.Handler
}

// WithMuxLogger sends errors met while gathering metrics to logger. Without
// it they are only counted (promhttp_metric_handler_errors_total) and shown
// to the scraper, which nobody reads.
func WithMuxLogger(logger *slog.Logger) MuxOption {
	return func(c *muxConfig) { c.logger = logger }
}

// WithoutPprof leaves out /debug/pprof/, for deployments where the internal
// listener is reachable by people who should not be able to read stacks or
// stall the process with a CPU profile.
func WithoutPprof() MuxOption {
	return func(c *muxConfig) { c.pprof = false }
}

// WithScrapeTimeout bounds how long one scrape may take before it is answered
// with 503, so that a stuck collector (a database pool statistic, say) cannot
// pile up scrapes. Zero, the default, means no bound.
func WithScrapeTimeout(d time.Duration) MuxOption {
	return func(c *muxConfig) { c.scrapeTimeout = d }
}

// WithHandler adds another route, such as "GET /-/healthy", to the internal
// mux, so that probes for the internal listener need no second port. The
// pattern follows net/http.ServeMux syntax; a conflicting pattern panics in
// NewInternalMux, as ServeMux.Handle does.
func WithHandler(pattern string, h http.Handler) MuxOption {
	return func(c *muxConfig) { c.extra = append(c.extra, extraRoute{pattern, h}) }
}

// NewInternalMux returns the handler of the internal metrics listener:
//
//   - GET/HEAD /metrics: everything in reg, in the text format or OpenMetrics
//     as the scraper prefers (OpenMetrics carries exemplars and is what
//     Prometheus asks for first). Other methods get 405 with "Allow: GET, HEAD".
//   - GET /debug/pprof/…: the net/http/pprof handlers, registered here
//     explicitly, never on http.DefaultServeMux, so they are reachable only on
//     this internal listener and never on the public API port. The command
//     line (/debug/pprof/cmdline) is served with its secrets redacted
//     (RedactArgs).
//   - GET /: a short index, so that an operator who opens the address in a
//     browser sees what is there.
//
// reg is used both as the source of metrics and to register the handler's own
// promhttp_metric_handler_* metrics. It must not be prometheus.DefaultRegisterer's
// registry; see NewRegistry. NewInternalMux panics if reg is nil.
func NewInternalMux(reg *prometheus.Registry, opts ...MuxOption) http.Handler {
	if reg == nil {
		panic("telemetry.NewInternalMux: nil registry")
	}
	cfg := muxConfig{pprof: true}
	for _, o := range opts {
		o(&cfg)
	}

	hopts := promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		Registry:          reg,
		ErrorHandling:     promhttp.ContinueOnError,
		Timeout:           cfg.scrapeTimeout,
	}
	if cfg.logger != nil {
		hopts.ErrorLog = slogPrintln{cfg.logger}
	}
	metrics := promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, hopts))

	mux := http.NewServeMux()
	// A method in the pattern makes ServeMux answer other methods with 405
	// and an Allow header; "GET" also matches HEAD.
	mux.Handle("GET /metrics", metrics)
	if cfg.pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", cmdline) // redacted: see cmdline.go
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /{$}", indexHandler(cfg.pprof))
	for _, r := range cfg.extra {
		mux.Handle(r.pattern, r.handler)
	}
	return mux
}

// indexHandler lists what the internal listener serves.
func indexHandler(withPprof bool) http.Handler {
	body := "kiln internal listener\n\n/metrics        Prometheus metrics\n"
	if withPprof {
		body += "/debug/pprof/   Go profiling\n"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, body)
	})
}

// slogPrintln adapts slog to promhttp.Logger.
type slogPrintln struct{ logger *slog.Logger }

func (l slogPrintln) Println(v ...any) {
	l.logger.Error("serving metrics", "error", fmt.Sprint(v...))
}

// ShutdownTimeout is how long Server.Serve waits for in-flight requests
// (a scrape, a CPU profile) after its context is cancelled before it closes
// their connections. It keeps shutdown of the server or runner prompt even
// when someone is in the middle of a 30-second profile.
const ShutdownTimeout = 5 * time.Second

// Server is an internal listener bound to its address. Listening and serving
// are separate steps so that a bad or busy address fails at start-up, where
// the caller can still report it and exit non-zero, and so that the caller
// can learn the actual port when it asked for port 0.
type Server struct {
	ln     net.Listener
	srv    *http.Server
	logger *slog.Logger
}

// Listen binds addr (as returned by ParseListenAddress) for serving h. It
// refuses a nil h, which http.Server would take to mean
// http.DefaultServeMux, where imported packages may have registered
// handlers nobody meant to expose. A nil logger discards log records.
func Listen(addr string, h http.Handler, logger *slog.Logger) (*Server, error) {
	if h == nil {
		return nil, errors.New("metrics server: nil handler (would serve http.DefaultServeMux)")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics server: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return &Server{ln: ln, srv: srv, logger: logger}, nil
}

// Addr returns the address the server is bound to, with the real port when
// port 0 was asked for.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until ctx is cancelled, then shuts down gracefully:
// it stops accepting, waits up to ShutdownTimeout for in-flight requests and
// closes what is left. It returns nil after a shutdown caused by ctx, and the
// error otherwise. Call it at most once.
func (s *Server) Serve(ctx context.Context) error {
	s.logger.Info("metrics server listening", "address", s.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		s.logger.Warn("metrics server: forcing close after shutdown timeout", "error", err)
		_ = s.srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", serr)
	}
	s.logger.Info("metrics server stopped", "address", s.Addr().String())
	return nil
}

// Close releases the listener of a server whose Serve was never called, for
// start-up paths that fail after Listen. On a serving server it closes all
// connections at once, without the grace of a cancelled context.
func (s *Server) Close() error {
	_ = s.srv.Close()
	if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// Serve is Listen followed by Server.Serve, for callers that need neither the
// bound address nor a separate start-up step.
func Serve(ctx context.Context, addr string, h http.Handler, logger *slog.Logger) error {
	s, err := Listen(addr, h, logger)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}
