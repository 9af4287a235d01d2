package openmetrics

import (
	dto "github.com/prometheus/client_model/go"
)

func init() { register("artifact_file_size", artifactFileSize) }

// artifactFileSize is the total declared size of the files of all
// artifacts, by category and scope: what each kind of artifact costs,
// counted per artifact (content shared by two artifacts counts twice; the
// stored size after deduplication is file_store_size).
//
// It has a series for exactly the label sets of the artifacts family: the
// store adds nothing for artifacts without files, so a category whose
// artifacts have no files would otherwise be missing instead of 0.
func artifactFileSize(b *build) (*dto.MetricFamily, error) {
	g := b.gauges("artifact_file_size", "category", labelScope)
	for _, family := range []string{"artifacts", "artifact_file_size"} {
		for _, t := range b.rows(family) {
			s, ok, err := g.seriesOf(t, nil)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			v := float64(t.Value)
			if family == "artifacts" {
				v = 0
			}
			g.addTo(s, v)
		}
	}
	return g.family("Total size in bytes of the files of artifacts, by category and scope (shared content counted once per artifact).")
}
