package api

import (
	"net/http"
	"strconv"

	"github.com/kiln-build/kiln/internal/model"
)

type memberInput struct {
	User  *ref                 `json:"user"`
	Group *ref                 `json:"group"`
	Role  *model.WorkspaceRole `json:"role"`
}

var memberSpec = specOf[memberInput, model.WorkspaceMember]()

// memberRoutes: /workspaces/{id}/members/ lists who holds which role in a
// workspace (for whoever sees the workspace) and grants roles to users or
// groups; /workspaces/{id}/members/{member}/ revokes one. Owners of the
// workspace and admins manage members.
func (a *API) memberRoutes() []Route {
	list := Prefix + "workspaces/{id}/members/{$}"
	item := Prefix + "workspaces/{id}/members/{member}/{$}"
	return []Route{
		{"GET " + list, a.endpoint(listMembers)},
		{"POST " + list, a.endpoint(addMember)},
		{"DELETE " + item, a.endpoint(removeMember)},
	}
}

// memberWorkspace reads the workspace of the path as the caller sees it.
func memberWorkspace(c *call) (*model.Workspace, error) {
	id, err := pathID(c, "id", "workspace")
	if err != nil {
		return nil, err
	}
	ws, err := c.a.st.Workspaces().Get(c.ctx(), id, c.viewer())
	if isNotFound(err) {
		return nil, notFound("workspace", id)
	}
	return ws, err
}

func listMembers(c *call) error {
	if err := c.anyone(); err != nil {
		return err
	}
	ws, err := memberWorkspace(c)
	if err != nil {
		return err
	}
	q, err := c.listQuery(map[string]filterFunc{"user": idFilter, "group": idFilter})
	if err != nil {
		return err
	}
	q.Filter["workspace"] = strconv.FormatInt(ws.ID, 10)
	items, err := c.a.st.WorkspaceMembers().List(c.ctx(), q)
	if err != nil {
		return err
	}
	return replyPage(c, q, items, func(m *model.WorkspaceMember) int64 { return m.ID }, nil)
}

func addMember(c *call) error {
	if err := c.requireUser(); err != nil {
		return err
	}
	if err := c.noQuery(); err != nil {
		return err
	}
	ws, err := memberWorkspace(c)
	if err != nil {
		return err
	}
	if err := c.requireRole(ws, model.RoleOwner); err != nil {
		return err
	}
	var in memberInput
	if err := c.decode(memberSpec, &in); err != nil {
		return err
	}
	m := &model.WorkspaceMember{WorkspaceID: ws.ID}
	if in.Role == nil {
		return required("role")
	}
	m.Role = *in.Role
	if in.User != nil {
		u, err := c.userRef("user", *in.User)
		if err != nil {
			return err
		}
		m.UserID = &u.ID
	}
	if in.Group != nil {
		g, err := c.groupRef("group", *in.Group)
		if err != nil {
			return err
		}
		m.GroupID = &g.ID
	}
	if err := c.a.st.WorkspaceMembers().Create(c.ctx(), m); err != nil {
		return err
	}
	return c.created(Prefix+"workspaces/"+strconv.FormatInt(ws.ID, 10)+"/members/"+strconv.FormatInt(m.ID, 10)+"/", m)
}

func removeMember(c *call) error {
	if err := c.requireUser(); err != nil {
		return err
	}
	if err := c.noQuery(); err != nil {
		return err
	}
	ws, err := memberWorkspace(c)
	if err != nil {
		return err
	}
	if err := c.requireRole(ws, model.RoleOwner); err != nil {
		return err
	}
	id, err := pathID(c, "member", "workspace member")
	if err != nil {
		return err
	}
	m, err := c.a.st.WorkspaceMembers().Get(c.ctx(), id, c.viewer())
	if isNotFound(err) || err == nil && m.WorkspaceID != ws.ID {
		return notFound("member of this workspace", id)
	}
	if err != nil {
		return err
	}
	if err := c.a.st.WorkspaceMembers().Delete(c.ctx(), id, c.viewer()); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}
