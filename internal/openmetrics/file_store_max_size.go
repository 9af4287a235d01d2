package openmetrics

import (
	dto "github.com/prometheus/client_model/go"
)

func init() { register("file_store_max_size", fileStoreMaxSize) }

// fileStoreMaxSize is the capacity of each file store that has one. Stores
// without a maximum get no series (rather than 0, which would read as
// "full"), so file_store_size / file_store_max_size only matches stores
// whose fill ratio means something.
func fileStoreMaxSize(b *build) (*dto.MetricFamily, error) {
	g := b.gauges("file_store_max_size", "backend", "name")
	for _, f := range b.snap.FileStores {
		if f.MaxSize != nil {
			g.l.set("backend", f.Backend)
			g.l.set("name", f.Name)
			g.add(float64(*f.MaxSize))
		}
	}
	return g.family("Maximum size in bytes of each file store that has one (max_size), by backend and name; stores without a maximum are absent.")
}
