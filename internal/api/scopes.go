package api

import (
	"github.com/kiln-build/kiln/internal/model"
)

type scopeInput struct {
	Name  *string `json:"name"`
	Label *string `json:"label"`
}

func (in *scopeInput) apply(s *model.Scope) error {
	set(&s.Name, in.Name)
	set(&s.Label, in.Label)
	return nil
}

// scopeRoutes: anyone reads scopes (their names are public anyway, they
// label the public metrics); admins write them.
func (a *API) scopeRoutes() []Route {
	return (&resource[model.Scope, scopeInput]{
		a: a, name: "scope", path: "scopes", table: a.st.Scopes(),
		id:      func(s *model.Scope) int64 { return s.ID },
		filters: map[string]filterFunc{"name": textFilter},
		read:    (*call).anyone,
		visible: func(c *call, s *model.Scope) bool { return c.seesScope(s.ID) },
		write:   (*call).requireAdmin,
		create: func(c *call, in *scopeInput) (*model.Scope, error) {
			if err := c.unrestricted(); err != nil {
				return nil, err
			}
			s := &model.Scope{}
			return s, in.apply(s)
		},
		allow: func(c *call, s *model.Scope) error { return c.inScope(s.ID) },
		update: func(c *call, in *scopeInput) (func(*model.Scope) error, error) {
			return in.apply, nil
		},
	}).routes()
}
