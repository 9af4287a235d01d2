package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("file_store_max_size", fileStoreMaxSize) }

// fileStoreMaxSize is the capacity of each file store that has one. Stores
// without a maximum get no series (rather than 0, which would read as
// "full"), so file_store_size / file_store_max_size only matches stores
// whose fill ratio means something.
func fileStoreMaxSize(s *store.Snapshot) (*dto.MetricFamily, error) {
	g := newGauges()
	for _, f := range s.FileStores {
		if f.MaxSize != nil {
			g.add(labelSet{"backend": f.Backend, "name": f.Name}, float64(*f.MaxSize))
		}
	}
	return g.family("file_store_max_size",
		"Maximum size in bytes of each file store that has one (max_size), by backend and name; stores without a maximum are absent."), nil
}
