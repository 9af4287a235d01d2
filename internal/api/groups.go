package api

import (
	"github.com/kiln-build/kiln/internal/model"
)

type groupInput struct {
	Name      *string `json:"name"`
	Scope     *ref    `json:"scope"`
	Ephemeral *bool   `json:"ephemeral"`
	// Members replaces the whole member list: users by id or username.
	Members *[]ref `json:"members"`
}

func (in *groupInput) change(c *call) (func(*model.Group) error, error) {
	scope, err := c.writableScope(in.Scope)
	if err != nil {
		return nil, err
	}
	var members []int64
	if in.Members != nil {
		members = []int64{}
		for _, m := range *in.Members {
			u, err := c.userRef("members", m)
			if err != nil {
				return nil, err
			}
			members = append(members, u.ID)
		}
	}
	return func(g *model.Group) error {
		set(&g.Name, in.Name)
		set(&g.Ephemeral, in.Ephemeral)
		if scope != nil {
			g.ScopeID = scope.ID // the store refuses a move to another scope
		}
		if members != nil {
			g.Members = members
		}
		return nil
	}, nil
}

// groupRoutes: users read groups (of the token's scope when it is
// restricted); admins write them, members included.
func (a *API) groupRoutes() []Route {
	return (&resource[model.Group, groupInput]{
		a: a, name: "group", path: "groups", table: a.st.Groups(),
		id: func(g *model.Group) int64 { return g.ID },
		filters: map[string]filterFunc{
			"scope":     refFilter((*call).scopeRef, func(s *model.Scope) int64 { return s.ID }),
			"name":      textFilter,
			"ephemeral": boolFilter,
		},
		read:    (*call).requireUser,
		visible: func(c *call, g *model.Group) bool { return c.seesScope(g.ScopeID) },
		write:   (*call).requireAdmin,
		create: func(c *call, in *groupInput) (*model.Group, error) {
			if in.Scope == nil {
				return nil, required("scope")
			}
			change, err := in.change(c)
			if err != nil {
				return nil, err
			}
			g := &model.Group{Members: []int64{}}
			return g, change(g)
		},
		allow:  func(c *call, g *model.Group) error { return c.inScope(g.ScopeID) },
		update: func(c *call, in *groupInput) (func(*model.Group) error, error) { return in.change(c) },
		present: func(g *model.Group) {
			if g.Members == nil {
				g.Members = []int64{}
			}
		},
	}).routes()
}
