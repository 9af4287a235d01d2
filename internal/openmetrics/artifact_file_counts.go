package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("artifact_file_counts", artifactFileCounts) }

// artifactFileCounts is the distribution of the number of files per
// artifact, by category and scope, with the store's bucket bounds.
func artifactFileCounts(b *build) (*dto.MetricFamily, error) {
	return totalsHistogram(b, "artifact_file_counts", "Number of files per artifact, by category and scope.",
		store.ArtifactFileCountBuckets, 1, "category", labelScope)
}
