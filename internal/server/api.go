package server

import (
	"log/slog"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// apiRoutes returns the REST API's routes and the public metrics routes,
// each a complete handler, so that newHandler can instrument them one by
// one under their own pattern.
func apiRoutes(st store.Store, cfg Config, logger *slog.Logger, d api.Dispatcher, events *telemetry.EventMetrics) []api.Route {
	a := api.New(st, logger.With("component", "api"), api.Options{Dispatcher: d, Blobs: cfg.blobs,
		Hooks: api.HookOptions{Secret: cfg.WebhookSecret, User: cfg.WebhookUser, Events: events,
			ReplayWindow: cfg.WebhookReplayWindow},
		Registration: cfg.Registration})
	return append(publicMetricsRoutes(st, a, cfg, logger), a.Routes()...)
}
