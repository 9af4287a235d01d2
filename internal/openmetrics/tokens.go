package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("tokens", tokens) }

// tokens counts API tokens by whether they are enabled and whom they
// belong to (a token may belong to a user, a worker, both or neither).
func tokens(s *store.Snapshot) (*dto.MetricFamily, error) {
	return totalsGauge(s, "tokens",
		"Number of API tokens, by enabled (1/0), user (1 if the token belongs to a user) and worker (1 if it belongs to a worker).",
		"enabled", "user", "worker")
}
