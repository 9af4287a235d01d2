package openmetrics

import (
	dto "github.com/prometheus/client_model/go"
)

func init() { register("tokens", tokens) }

// tokens counts API tokens by whether they are enabled and whom they
// belong to (a token may belong to a user, a worker, both or neither).
func tokens(b *build) (*dto.MetricFamily, error) {
	return totalsGauge(b, "tokens",
		"Number of API tokens, by enabled (1/0), user (1 if the token belongs to a user) and worker (1 if it belongs to a worker).",
		"enabled", "user", "worker")
}
