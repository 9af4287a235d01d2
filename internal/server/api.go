package server

import (
	"log/slog"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/store"
)

// apiRoutes returns the REST API's routes, each a complete handler, so that
// newHandler can instrument them one by one under their own pattern.
func apiRoutes(st store.Store, logger *slog.Logger) []api.Route {
	return api.New(st, logger.With("component", "api"), api.Options{}).Routes()
}
