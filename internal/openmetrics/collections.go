package openmetrics

import (
	dto "github.com/prometheus/client_model/go"
)

func init() { register("collections", collections) }

// collections counts collections by category and scope; their names stay
// private.
func collections(b *build) (*dto.MetricFamily, error) {
	return totalsGauge(b, "collections", "Number of collections, by category and scope.", "category", labelScope)
}
