package openmetrics

import (
	dto "github.com/prometheus/client_model/go"
)

func init() { register("assets", assets) }

// assets counts assets by category and scope.
func assets(b *build) (*dto.MetricFamily, error) {
	return totalsGauge(b, "assets", "Number of assets, by category and scope.", "category", labelScope)
}
