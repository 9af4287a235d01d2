package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("artifacts", artifacts) }

// artifacts counts artifacts by category and scope. Artifacts of private
// workspaces are counted too, but only under their category and scope.
func artifacts(s *store.Snapshot) (*dto.MetricFamily, error) {
	return totalsGauge(s, "artifacts", "Number of artifacts, by category and scope.", "category", labelScope)
}
