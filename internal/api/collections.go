package api

import (
	"encoding/json"

	"github.com/kiln-build/kiln/internal/model"
)

type collectionInput struct {
	Category  *string          `json:"category"`
	Name      *string          `json:"name"`
	Workspace *ref             `json:"workspace"`
	Data      *json.RawMessage `json:"data"`
}

// collectionRoutes: as assets — anyone reads the collections of the
// workspaces they see, contributors and owners write them. item_count is
// kept by kiln; items change through the items routes.
func (a *API) collectionRoutes() []Route {
	return (&resource[model.Collection, collectionInput]{
		a: a, name: "collection", path: "collections", table: a.st.Collections(),
		id: func(o *model.Collection) int64 { return o.ID },
		filters: map[string]filterFunc{
			"workspace": workspaceFilter, "category": textFilter, "name": textFilter,
		},
		read:  (*call).anyone,
		write: (*call).requireUser,
		create: func(c *call, in *collectionInput) (*model.Collection, error) {
			ws, err := c.writableWorkspace(in.Workspace)
			if err != nil {
				return nil, err
			}
			o := &model.Collection{WorkspaceID: ws.ID, Data: emptyObject()}
			set(&o.Category, in.Category)
			set(&o.Name, in.Name)
			set(&o.Data, in.Data)
			return o, nil
		},
		allow: func(c *call, o *model.Collection) error { return c.contributorOf(o.WorkspaceID) },
		update: func(c *call, in *collectionInput) (func(*model.Collection) error, error) {
			var ws *model.Workspace
			if in.Workspace != nil {
				var err error
				if ws, err = c.workspaceRef("workspace", *in.Workspace); err != nil {
					return nil, err
				}
			}
			return func(o *model.Collection) error {
				if ws != nil {
					o.WorkspaceID = ws.ID // the store refuses a move
				}
				set(&o.Category, in.Category)
				set(&o.Name, in.Name)
				set(&o.Data, in.Data)
				return nil
			}, nil
		},
	}).routes()
}
