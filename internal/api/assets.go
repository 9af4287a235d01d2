package api

import (
	"encoding/json"

	"github.com/kiln-build/kiln/internal/model"
)

type assetInput struct {
	Category  *string          `json:"category"`
	Workspace *ref             `json:"workspace"`
	Data      *json.RawMessage `json:"data"`
}

// workspaceFilter resolves ?workspace= among the workspaces the caller
// sees, so that a list answers the same about a hidden workspace as about
// one that does not exist.
var workspaceFilter = refFilter((*call).visibleWorkspaceRef, func(w *model.Workspace) int64 { return w.ID })

// contributorOf lets through callers who may write in the workspace of an
// existing object.
func (c *call) contributorOf(workspaceID int64) error {
	ws, err := c.workspaceOf(workspaceID)
	if err != nil {
		return err
	}
	return c.requireRole(ws, model.RoleContributor)
}

// writableWorkspace resolves the workspace a new object goes to and checks
// that the caller may write there.
func (c *call) writableWorkspace(r *ref) (*model.Workspace, error) {
	if r == nil {
		return nil, required("workspace")
	}
	ws, err := c.workspaceRef("workspace", *r)
	if err != nil {
		return nil, err
	}
	return ws, c.requireRole(ws, model.RoleContributor)
}

// assetRoutes: anyone reads the assets of the workspaces they see;
// contributors and owners of a workspace write its assets. The creator is
// the caller, and category and workspace are fixed once created (the
// store refuses changes).
func (a *API) assetRoutes() []Route {
	return (&resource[model.Asset, assetInput]{
		a: a, name: "asset", path: "assets", table: a.st.Assets(),
		id:      func(o *model.Asset) int64 { return o.ID },
		filters: map[string]filterFunc{"workspace": workspaceFilter, "category": textFilter},
		read:    (*call).anyone,
		write:   (*call).requireUser,
		create: func(c *call, in *assetInput) (*model.Asset, error) {
			ws, err := c.writableWorkspace(in.Workspace)
			if err != nil {
				return nil, err
			}
			creator := c.user().ID
			o := &model.Asset{WorkspaceID: ws.ID, CreatedBy: &creator, Data: emptyObject()}
			set(&o.Category, in.Category)
			set(&o.Data, in.Data)
			return o, nil
		},
		allow: func(c *call, o *model.Asset) error { return c.contributorOf(o.WorkspaceID) },
		update: func(c *call, in *assetInput) (func(*model.Asset) error, error) {
			var ws *model.Workspace
			if in.Workspace != nil {
				var err error
				if ws, err = c.workspaceRef("workspace", *in.Workspace); err != nil {
					return nil, err
				}
			}
			return func(o *model.Asset) error {
				if ws != nil {
					o.WorkspaceID = ws.ID // the store refuses a move
				}
				set(&o.Category, in.Category)
				set(&o.Data, in.Data)
				return nil
			}, nil
		},
	}).routes()
}
