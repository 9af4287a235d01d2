package openmetrics

import (
	dto "github.com/prometheus/client_model/go"
)

func init() { register("groups", groups) }

// groups counts user groups by their ephemeral flag and, as the reference
// implementation does, by scope (groups belong to a scope).
func groups(b *build) (*dto.MetricFamily, error) {
	return totalsGauge(b, "groups", "Number of user groups, by ephemeral (1 for groups created by automation, else 0) and scope.",
		"ephemeral", labelScope)
}
