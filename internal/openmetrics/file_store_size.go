package openmetrics

import (
	dto "github.com/prometheus/client_model/go"
)

func init() { register("file_store_size", fileStoreSize) }

// fileStoreSize is the bytes stored in each file store (its total_size,
// kept exact by the store with every upload and deletion).
func fileStoreSize(b *build) (*dto.MetricFamily, error) {
	g := b.gauges("file_store_size", "backend", "name")
	for _, f := range b.snap.FileStores {
		g.l.set("backend", f.Backend)
		g.l.set("name", f.Name)
		g.add(float64(f.TotalSize))
	}
	return g.family("Bytes stored in each file store (total_size), by backend and name.")
}
