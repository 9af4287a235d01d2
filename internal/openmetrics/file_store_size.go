package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("file_store_size", fileStoreSize) }

// fileStoreSize is the bytes stored in each file store (its total_size,
// kept exact by the store with every upload and deletion).
func fileStoreSize(s *store.Snapshot) (*dto.MetricFamily, error) {
	g := newGauges()
	for _, f := range s.FileStores {
		g.add(labelSet{"backend": f.Backend, "name": f.Name}, float64(f.TotalSize))
	}
	return g.family("file_store_size", "Bytes stored in each file store (total_size), by backend and name."), nil
}
