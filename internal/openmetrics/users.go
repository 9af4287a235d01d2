package openmetrics

import (
	dto "github.com/prometheus/client_model/go"
)

func init() { register("users", users) }

// users counts users by their active flag. The store never counts kiln's
// internal system user, which is not a person.
func users(b *build) (*dto.MetricFamily, error) {
	return totalsGauge(b, "users", "Number of users (without the internal system user), by active (1/0).", "active")
}
