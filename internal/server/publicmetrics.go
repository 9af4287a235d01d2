package server

import (
	"log/slog"
	"net/http"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/openmetrics"
	"github.com/kiln-build/kiln/internal/store"
)

// publicMetricsRoutes mounts the public metrics endpoint and the JSON
// service status on one cache, so both answer from the same snapshot. They
// need no token; a scope-restricted token narrows them to its scope, and a
// bad token is refused (401) as everywhere else.
func publicMetricsRoutes(st store.Store, a *api.API, cfg Config, logger *slog.Logger) []api.Route {
	e := openmetrics.New(st, openmetrics.Options{
		CacheTTL: cfg.MetricsCacheTTL,
		Logger:   logger.With("component", "open-metrics"),
		ScopeOf: func(r *http.Request) (int64, bool, error) {
			p, err := a.Principal(r)
			if err != nil || p == nil || p.Token.ScopeID == nil {
				return 0, false, err
			}
			return *p.Token.ScopeID, true, nil
		},
	})
	return []api.Route{
		{Pattern: "GET /api/1.0/open-metrics/{$}", Handler: e},
		{Pattern: "GET /api/1.0/service-status/{$}", Handler: e.ServiceStatus()},
	}
}
