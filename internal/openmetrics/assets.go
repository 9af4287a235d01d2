package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("assets", assets) }

// assets counts assets by category and scope.
func assets(s *store.Snapshot) (*dto.MetricFamily, error) {
	return totalsGauge(s, "assets", "Number of assets, by category and scope.", "category", labelScope)
}
