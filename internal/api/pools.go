package api

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/pool"
	"github.com/kiln-build/kiln/internal/store"
)

// Defaults of a new pool's timeouts.
const (
	defaultIdleTimeout    = 10 * time.Minute
	defaultStartupTimeout = 10 * time.Minute
)

type poolInput struct {
	Name               *string          `json:"name"`
	Provider           *string          `json:"provider"`
	Settings           *json.RawMessage `json:"settings"`
	Enabled            *bool            `json:"enabled"`
	Architectures      *[]string        `json:"architectures"`
	Backends           *[]string        `json:"backends"`
	Concurrent         *int             `json:"concurrent"`
	MinIdle            *int             `json:"min_idle"`
	MaxInstances       *int             `json:"max_instances"`
	IdleTimeout        *model.Duration  `json:"idle_timeout"`
	StartupTimeout     *model.Duration  `json:"startup_timeout"`
	MaxSecondsPerMonth nullable[int64]  `json:"max_seconds_per_month"`
}

// apply sets the given fields on p and checks the provider's settings of
// the result, so that a change of provider or of max_instances is checked
// against the settings it keeps.
func (in *poolInput) apply(p *model.WorkerPool) error {
	set(&p.Name, in.Name)
	set(&p.Provider, in.Provider)
	set(&p.Settings, in.Settings)
	set(&p.Enabled, in.Enabled)
	set(&p.Architectures, in.Architectures)
	set(&p.Backends, in.Backends)
	set(&p.Concurrent, in.Concurrent)
	set(&p.MinIdle, in.MinIdle)
	set(&p.MaxInstances, in.MaxInstances)
	set(&p.IdleTimeout, in.IdleTimeout)
	set(&p.StartupTimeout, in.StartupTimeout)
	setPtr(&p.MaxSecondsPerMonth, in.MaxSecondsPerMonth)
	return pool.CheckSettings(p)
}

// poolRoutes: worker pools are admins' business — reading included, since
// a pool's settings name the executables kiln runs and what they are
// told — and global objects, out of reach of scope-restricted tokens.
// DELETE answers 202 with the pool while its instances are drained (it
// goes once they are stopped), 204 when it is gone at once. A pool's
// instances are listed at worker-pools/{id}/instances/ (live ones; ?all=true
// with the stopped ones).
func (a *API) poolRoutes() []Route {
	r := &resource[model.WorkerPool, poolInput]{
		a: a, name: "worker pool", path: "worker-pools", table: a.st.WorkerPools(),
		id:      func(p *model.WorkerPool) int64 { return p.ID },
		filters: map[string]filterFunc{"name": textFilter, "provider": textFilter, "enabled": boolFilter},
		read:    (*call).requireAdmin,
		write:   (*call).requireAdmin,
		create: func(c *call, in *poolInput) (*model.WorkerPool, error) {
			if err := c.unrestricted(); err != nil {
				return nil, err
			}
			p := &model.WorkerPool{Enabled: true, Settings: emptyObject(), Backends: []string{}, Concurrent: 1,
				IdleTimeout: model.Duration(defaultIdleTimeout), StartupTimeout: model.Duration(defaultStartupTimeout)}
			if in.Name == nil {
				return nil, required("name")
			}
			if in.Provider == nil {
				return nil, required("provider")
			}
			return p, in.apply(p)
		},
		insert: func(c *call, p *model.WorkerPool) (int64, any, error) {
			if err := c.a.st.WorkerPools().Create(c.ctx(), p); err != nil {
				return 0, nil, err
			}
			// answered as GET shows it, with its status
			got, err := c.a.st.WorkerPools().Get(c.ctx(), p.ID, nil)
			if err != nil {
				return 0, nil, err
			}
			return got.ID, got, nil
		},
		allow:  func(c *call, _ *model.WorkerPool) error { return c.unrestricted() },
		update: func(c *call, in *poolInput) (func(*model.WorkerPool) error, error) { return in.apply, nil },
		present: func(p *model.WorkerPool) {
			if p.Backends == nil {
				p.Backends = []string{}
			}
		},
	}
	routes := r.routes()
	for i := range routes {
		if routes[i].Pattern == "DELETE "+Prefix+r.path+"/{id}/{$}" {
			routes[i].Handler = a.endpoint(func(c *call) error { return removePool(c, r) })
		}
	}
	return append(routes, Route{"GET " + Prefix + r.path + "/{id}/instances/{$}", a.endpoint(func(c *call) error {
		return listInstances(c, r)
	})})
}

// removePool deletes a pool, or starts draining it.
func removePool(c *call, r *resource[model.WorkerPool, poolInput]) error {
	p, err := r.target(c)
	if err != nil {
		return err
	}
	drained, err := c.a.st.RemoveWorkerPool(c.ctx(), p.ID, c.viewer())
	if err != nil {
		return err
	}
	if drained == nil {
		c.w.WriteHeader(http.StatusNoContent)
		return nil
	}
	r.tidy(drained)
	return c.reply(http.StatusAccepted, drained)
}

// listInstances answers a page of a pool's instances.
func listInstances(c *call, r *resource[model.WorkerPool, poolInput]) error {
	if err := r.read(c); err != nil {
		return err
	}
	p, err := r.get(c)
	if err != nil {
		return err
	}
	q, err := c.listQuery(map[string]filterFunc{"all": boolFilter})
	if err != nil {
		return err
	}
	items, err := c.a.st.PoolInstances(c.ctx(), store.InstanceQuery{PoolID: p.ID, All: q.Filter["all"] == "true",
		After: q.After, Limit: q.Limit})
	if err != nil {
		return err
	}
	return replyPage(c, q, items, func(i *model.PoolInstance) int64 { return i.ID }, nil)
}
