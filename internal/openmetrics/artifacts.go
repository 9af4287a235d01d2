package openmetrics

import (
	dto "github.com/prometheus/client_model/go"
)

func init() { register("artifacts", artifacts) }

// artifacts counts artifacts by category and scope. Artifacts of private
// workspaces are counted too, but only under their category and scope.
func artifacts(b *build) (*dto.MetricFamily, error) {
	return totalsGauge(b, "artifacts", "Number of artifacts, by category and scope.", "category", labelScope)
}
