package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("users", users) }

// users counts users by their active flag. The store never counts kiln's
// internal system user, which is not a person.
func users(s *store.Snapshot) (*dto.MetricFamily, error) {
	return totalsGauge(s, "users", "Number of users (without the internal system user), by active (1/0).", "active")
}
