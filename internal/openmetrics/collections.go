package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("collections", collections) }

// collections counts collections by category and scope; their names stay
// private.
func collections(s *store.Snapshot) (*dto.MetricFamily, error) {
	return totalsGauge(s, "collections", "Number of collections, by category and scope.", "category", labelScope)
}
