package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("collection_sizes", collectionSizes) }

// collectionSizes is the distribution of the number of items per
// collection, by category and scope.
func collectionSizes(b *build) (*dto.MetricFamily, error) {
	return totalsHistogram(b, "collection_sizes", "Number of items per collection, by category and scope.",
		store.CollectionSizeBuckets, 1, "category", labelScope)
}
