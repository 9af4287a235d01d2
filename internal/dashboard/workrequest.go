package dashboard

import (
	"strconv"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

type workRequestPage struct {
	Now       time.Time
	Scope     model.Scope
	Workspace model.Workspace
	Request   requestRow
	// Parent is the workflow the request is a step of; Steps the steps
	// of a workflow.
	Parent       *model.WorkRequest
	Steps        []requestRow
	Dependencies []model.WorkRequest
	Artifacts    []model.Artifact
	// CreatedBy is the creator's name, for the visitors the API shows
	// that user to (admins, and the creator).
	CreatedBy string
	// Follow says that the log grows: the page follows it.
	Follow   bool
	SignedIn bool
}

func (p workRequestPage) title() string {
	return "#" + strconv.FormatInt(p.Request.ID, 10) + " " + p.Request.TaskName
}

// StepTable is the list of a workflow's steps.
func (p workRequestPage) StepTable() requestTable {
	return requestTable{Rows: p.Steps, Now: p.Now, Workers: p.SignedIn, Caption: "Steps of the workflow", Empty: "This workflow has no steps."}
}

// workRequest shows one request: what it is, its timeline, what it
// depends on, its steps (for a workflow), its artifacts and its log.
func (d *Dashboard) workRequest(v *visit) error {
	if err := v.onlyParams(); err != nil {
		return err
	}
	id, err := v.pathID("work request")
	if err != nil {
		return err
	}
	wr, err := d.st.WorkRequests().Get(v.ctx(), id, v.viewer)
	if err != nil {
		return hidden(err, "work request")
	}
	ws, err := d.st.Workspaces().Get(v.ctx(), wr.WorkspaceID, nil)
	if err != nil {
		return err
	}
	sc, err := d.st.Scopes().Get(v.ctx(), ws.ScopeID, nil)
	if err != nil {
		return err
	}
	rows, err := v.rows([]model.WorkRequest{*wr})
	if err != nil {
		return err
	}
	p := workRequestPage{Now: v.now, Scope: *sc, Workspace: *ws, Request: rows[0], SignedIn: v.signedIn(),
		Follow: !wr.Status.Finished()}
	// what it is linked to lives in its workspace: visible with it
	if wr.ParentID != nil {
		if p.Parent, err = d.st.WorkRequests().Get(v.ctx(), *wr.ParentID, v.viewer); err != nil {
			return err
		}
	}
	for _, dep := range wr.Dependencies {
		o, err := d.st.WorkRequests().Get(v.ctx(), dep, v.viewer)
		if err != nil {
			return err
		}
		p.Dependencies = append(p.Dependencies, *o)
	}
	if wr.TaskType == model.TaskWorkflow {
		steps, err := d.st.WorkflowChildren(v.ctx(), wr.ID, v.viewer)
		if err != nil {
			return err
		}
		if p.Steps, err = v.rows(steps); err != nil {
			return err
		}
	}
	if p.Artifacts, err = d.st.Artifacts().List(v.ctx(), store.Query{Limit: store.MaxPageSize, Viewer: v.viewer,
		Filter: map[string]string{"work_request": strconv.FormatInt(wr.ID, 10)}}); err != nil {
		return err
	}
	if wr.CreatedBy != nil && v.p != nil && v.p.User != nil && (v.p.User.IsAdmin || v.p.User.ID == *wr.CreatedBy) {
		u, err := d.st.Users().Get(v.ctx(), *wr.CreatedBy, nil)
		if err != nil {
			return err
		}
		p.CreatedBy = u.Username
	}
	v.render(200, "work-request", p)
	return nil
}
