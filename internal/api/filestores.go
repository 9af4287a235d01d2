package api

import (
	"encoding/json"

	"github.com/kiln-build/kiln/internal/model"
)

type fileStoreInput struct {
	Name          *string                 `json:"name"`
	Backend       *model.FileStoreBackend `json:"backend"`
	Configuration *json.RawMessage        `json:"configuration"`
	MaxSize       nullable[int64]         `json:"max_size"`
}

func (in *fileStoreInput) apply(f *model.FileStore) error {
	set(&f.Name, in.Name)
	set(&f.Backend, in.Backend)
	set(&f.Configuration, in.Configuration)
	setPtr(&f.MaxSize, in.MaxSize)
	return nil
}

// fileStoreRoutes: admins only, reads included, because a configuration
// holds the credentials of its backend (S3 keys). total_size is kept by
// kiln and read-only.
func (a *API) fileStoreRoutes() []Route {
	return (&resource[model.FileStore, fileStoreInput]{
		a: a, name: "file store", path: "file-stores", table: a.st.FileStores(),
		id:      func(f *model.FileStore) int64 { return f.ID },
		filters: map[string]filterFunc{"name": textFilter, "backend": textFilter},
		read:    (*call).requireAdmin,
		write:   (*call).requireAdmin,
		create: func(c *call, in *fileStoreInput) (*model.FileStore, error) {
			if err := c.unrestricted(); err != nil {
				return nil, err
			}
			f := &model.FileStore{Configuration: emptyObject()}
			return f, in.apply(f)
		},
		allow:  func(c *call, _ *model.FileStore) error { return c.unrestricted() },
		update: func(c *call, in *fileStoreInput) (func(*model.FileStore) error, error) { return in.apply, nil },
	}).routes()
}
