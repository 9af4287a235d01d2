package api

import (
	"github.com/kiln-build/kiln/internal/model"
)

type workspaceInput struct {
	Name            *string            `json:"name"`
	Scope           *ref               `json:"scope"`
	Public          *bool              `json:"public"`
	ExpirationDelay nullable[duration] `json:"expiration_delay"`
}

// change resolves the scope reference (checking the token's scope
// restriction) and returns the change to apply.
func (in *workspaceInput) change(c *call) (func(*model.Workspace) error, error) {
	scope, err := c.writableScope(in.Scope)
	if err != nil {
		return nil, err
	}
	return func(w *model.Workspace) error {
		set(&w.Name, in.Name)
		set(&w.Public, in.Public)
		if in.ExpirationDelay.set {
			w.ExpirationDelay = nil
			if !in.ExpirationDelay.null {
				d := model.Duration(in.ExpirationDelay.value)
				w.ExpirationDelay = &d
			}
		}
		if scope != nil {
			w.ScopeID = scope.ID // the store refuses a move to another scope
		}
		return nil
	}, nil
}

// workspaceRoutes: anyone reads the workspaces they may see (public ones,
// and private ones they are members of); admins write them. A new
// workspace is private unless "public": true is given, so that forgetting
// the flag never publishes anything.
func (a *API) workspaceRoutes() []Route {
	return (&resource[model.Workspace, workspaceInput]{
		a: a, name: "workspace", path: "workspaces", table: a.st.Workspaces(),
		id: func(w *model.Workspace) int64 { return w.ID },
		filters: map[string]filterFunc{
			"scope":  refFilter((*call).scopeRef, func(s *model.Scope) int64 { return s.ID }),
			"name":   textFilter,
			"public": boolFilter,
		},
		read:  (*call).anyone,
		write: (*call).requireAdmin,
		create: func(c *call, in *workspaceInput) (*model.Workspace, error) {
			if in.Scope == nil {
				return nil, required("scope")
			}
			change, err := in.change(c)
			if err != nil {
				return nil, err
			}
			w := &model.Workspace{}
			return w, change(w)
		},
		allow: func(c *call, w *model.Workspace) error { return c.inScope(w.ScopeID) },
		update: func(c *call, in *workspaceInput) (func(*model.Workspace) error, error) {
			return in.change(c)
		},
	}).routes()
}
