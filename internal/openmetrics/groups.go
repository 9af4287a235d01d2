package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("groups", groups) }

// groups counts user groups by their ephemeral flag and, as the reference
// implementation does, by scope (groups belong to a scope).
func groups(s *store.Snapshot) (*dto.MetricFamily, error) {
	return totalsGauge(s, "groups", "Number of user groups, by ephemeral (1 for groups created by automation, else 0) and scope.",
		"ephemeral", labelScope)
}
