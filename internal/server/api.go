package server

import (
	"log/slog"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/dashboard"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// apiRoutes returns the REST API's routes, the public metrics routes and
// the dashboard's, each a complete handler, so that newHandler can
// instrument them one by one under their own pattern. The dashboard
// answers downloads and logs through this same API.
func apiRoutes(st store.Store, cfg Config, logger *slog.Logger, d api.Dispatcher, events *telemetry.EventMetrics) ([]api.Route, error) {
	a := api.New(st, logger.With("component", "api"), api.Options{Dispatcher: d, Blobs: cfg.blobs,
		Hooks: api.HookOptions{Secret: cfg.WebhookSecret, User: cfg.WebhookUser, Events: events,
			ReplayWindow: cfg.WebhookReplayWindow},
		Registration: cfg.Registration})
	dash, err := dashboard.New(st, a, dashboard.Options{Logger: logger.With("component", "dashboard")})
	if err != nil {
		return nil, err
	}
	routes := append(publicMetricsRoutes(st, a, cfg, logger), a.Routes()...)
	return append(routes, dash.Routes()...), nil
}
