package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("artifact_file_sizes", artifactFileSizes) }

// artifactFileSizes is the distribution of the size of each artifact file,
// by the category and scope of its artifact.
func artifactFileSizes(b *build) (*dto.MetricFamily, error) {
	return totalsHistogram(b, "artifact_file_sizes", "Size in bytes of each file of an artifact, by artifact category and scope.",
		store.ArtifactFileSizeBuckets, 1, "category", labelScope)
}
