package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/kiln-build/kiln/internal/filestore"
	"github.com/kiln-build/kiln/internal/model"
)

type fileStoreInput struct {
	Name          *string                 `json:"name"`
	Backend       *model.FileStoreBackend `json:"backend"`
	Configuration *json.RawMessage        `json:"configuration"`
	MaxSize       nullable[int64]         `json:"max_size"`
	Default       *bool                   `json:"default"`
}

func (in *fileStoreInput) apply(f *model.FileStore) error {
	set(&f.Name, in.Name)
	set(&f.Backend, in.Backend)
	set(&f.Configuration, in.Configuration)
	setPtr(&f.MaxSize, in.MaxSize)
	set(&f.Default, in.Default)
	return nil
}

// probeTimeout bounds the check of a new configuration, so that an
// endpoint that swallows packets answers the admin in seconds.
const probeTimeout = 20 * time.Second

// checkConfiguration decodes a file store's configuration strictly, for
// its backend, and checks that the store it describes can be written: a
// file or an object is written, read back and deleted. A configuration
// that cannot be read is a 400 naming its key ("configuration.endpoint");
// one that reads but does not work is a 422 naming the key to fix, saying
// what is wrong (unreachable, no such bucket, access denied, TLS). The
// canonical form of the configuration replaces the given one.
func (c *call) checkConfiguration(backend model.FileStoreBackend, in *fileStoreInput) error {
	if backend != model.BackendLocal && backend != model.BackendS3 {
		return nil // the store refuses the backend, naming it
	}
	raw := json.RawMessage(nil)
	if in.Configuration != nil {
		raw = *in.Configuration
	}
	canon, err := filestore.ParseConfig(backend, raw)
	if err != nil {
		return configurationError(http.StatusBadRequest, err)
	}
	in.Configuration = &canon
	be, err := filestore.Open(&model.FileStore{Name: "new", Backend: backend, Configuration: canon})
	if err != nil {
		return configurationError(http.StatusUnprocessableEntity, err)
	}
	if cl, ok := be.(io.Closer); ok {
		defer cl.Close()
	}
	ctx, cancel := context.WithTimeout(c.ctx(), probeTimeout)
	defer cancel()
	if err := be.Probe(ctx); err != nil {
		return configurationError(http.StatusUnprocessableEntity, err)
	}
	return nil
}

// configurationError answers a *ConfigError or a *ProbeError with status,
// naming the key as "configuration.<key>".
func configurationError(status int, err error) error {
	var ce *filestore.ConfigError
	var pe *filestore.ProbeError
	field, msg := "", err.Error()
	switch {
	case errors.As(err, &ce):
		field, msg = ce.Field, ce.Message
	case errors.As(err, &pe):
		field, msg = pe.Field, pe.Message
	}
	if field == "" {
		return errorf(status, "configuration", "%s", msg)
	}
	return errorf(status, "configuration."+field, "configuration.%s: %s", field, msg)
}

// fileStoreRoutes: admins only, reads included: a configuration names the
// infrastructure behind a store. It never holds credentials — a body that
// tries is refused, saying how S3 keys reach kiln — and what is shown is
// redacted all the same, in case an older kiln stored some. A new or
// changed configuration is checked against the store itself before it is
// saved. total_size is kept by kiln and read-only; default moves to the
// store that is given it, and new uploads follow.
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
			if in.Backend != nil {
				if err := c.checkConfiguration(*in.Backend, in); err != nil {
					return nil, err
				}
			}
			f := &model.FileStore{Configuration: emptyObject()}
			return f, in.apply(f)
		},
		allow: func(c *call, _ *model.FileStore) error { return c.unrestricted() },
		update: func(c *call, in *fileStoreInput) (func(*model.FileStore) error, error) {
			if in.Configuration != nil {
				id, err := pathID(c, "id", "file store")
				if err != nil {
					return nil, err
				}
				cur, err := c.a.st.FileStores().Get(c.ctx(), id, nil)
				if err != nil {
					return nil, err
				}
				backend := cur.Backend
				if in.Backend != nil {
					backend = *in.Backend // the store refuses a change, naming it
				}
				if err := c.checkConfiguration(backend, in); err != nil {
					return nil, err
				}
			}
			return in.apply, nil
		},
		present: func(f *model.FileStore) { f.Configuration = filestore.Redact(f.Configuration) },
	}).routes()
}
