package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/workflow"
)

// workflowView is a workflow as workflows/ shows it: its root work request
// (task type Workflow) with the children that do the work.
type workflowView struct {
	model.WorkRequest
	Children []model.WorkRequest `json:"children"`
}

// workflowInput is the body of POST workflows/: the template (id, or name
// with workspace when several workspaces the caller sees have one of that
// name) and the run's parameters.
type workflowInput struct {
	Template   *ref               `json:"template"`
	Workspace  *ref               `json:"workspace"`
	Parameters *map[string]string `json:"parameters"`
}

var workflowSpec = specOf[workflowInput, workflowView]()

// workflowRoutes: workflows are work requests (their roots) started from
// templates. Anyone lists and shows the workflows of the workspaces they
// see; contributors and owners start and abort them. Starting expands the
// template with the parameters and submits root and children in one
// transaction; a parameter that is missing, fixed by the template or not
// used by it is a 400 naming parameters.NAME.
func (a *API) workflowRoutes() []Route {
	list := Prefix + "workflows/{$}"
	item := Prefix + "workflows/{id}/"
	return []Route{
		{"GET " + list, a.endpoint(listWorkflows)},
		{"POST " + list, a.endpoint(startWorkflow)},
		{"GET " + item + "{$}", a.endpoint(showWorkflow)},
		{"POST " + item + "abort/{$}", a.endpoint(abortWorkflow)},
	}
}

var workflowFilters = map[string]filterFunc{
	"workspace": workspaceFilter,
	"status":    enumFilter(enumStrings(model.Statuses)...),
	"result":    enumFilter("success", "failure", "error", "skipped"),
	"task_name": enumFilter(string(workflow.KindSequence), string(workflow.KindMatrix)),
}

// children reads every child of a workflow root, in id order.
func (c *call) children(root int64) ([]model.WorkRequest, error) {
	out := []model.WorkRequest{}
	q := store.Query{Limit: store.MaxPageSize, Filter: map[string]string{"parent": strconv.FormatInt(root, 10)}}
	for {
		page, err := c.a.st.WorkRequests().List(c.ctx(), q)
		if err != nil {
			return nil, err
		}
		for i := range page {
			presentWorkRequest(&page[i])
		}
		out = append(out, page...)
		if len(page) < q.Limit {
			return out, nil
		}
		q.After = page[len(page)-1].ID
	}
}

func (c *call) view(root *model.WorkRequest) (*workflowView, error) {
	kids, err := c.children(root.ID)
	if err != nil {
		return nil, err
	}
	presentWorkRequest(root)
	return &workflowView{WorkRequest: *root, Children: kids}, nil
}

func listWorkflows(c *call) error {
	if err := c.anyone(); err != nil {
		return err
	}
	q, err := c.listQuery(workflowFilters)
	if err != nil {
		return err
	}
	q.Filter["task_type"] = string(model.TaskWorkflow)
	roots, err := c.a.st.WorkRequests().List(c.ctx(), q)
	if err != nil {
		return err
	}
	views := make([]workflowView, 0, len(roots))
	for i := range roots {
		v, err := c.view(&roots[i])
		if err != nil {
			return err
		}
		views = append(views, *v)
	}
	return replyPage(c, q, views, func(v *workflowView) int64 { return v.ID }, nil)
}

// workflowRoot reads the workflow of the item path as the caller sees it.
func workflowRoot(c *call) (*model.WorkRequest, error) {
	id, err := pathID(c, "id", "workflow")
	if err != nil {
		return nil, err
	}
	root, err := c.a.st.WorkRequests().Get(c.ctx(), id, c.viewer())
	if isNotFound(err) || err == nil && (root.TaskType != model.TaskWorkflow || root.ParentID != nil) {
		return nil, notFound("workflow", id)
	}
	return root, err
}

func showWorkflow(c *call) error {
	if err := c.anyone(); err != nil {
		return err
	}
	if err := c.noQuery(); err != nil {
		return err
	}
	root, err := workflowRoot(c)
	if err != nil {
		return err
	}
	v, err := c.view(root)
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, v)
}

// templateRef resolves the template of a start request among those the
// caller sees.
func (c *call) templateRef(in *workflowInput) (*model.WorkflowTemplate, error) {
	if in.Template == nil {
		return nil, required("template")
	}
	r := *in.Template
	if r.name == "" {
		t, err := c.a.st.WorkflowTemplates().Get(c.ctx(), r.id, c.viewer())
		if isNotFound(err) {
			return nil, invalidField("template", "no workflow template with id %d", r.id)
		}
		return t, err
	}
	filter := map[string]string{"name": r.name}
	if in.Workspace != nil {
		ws, err := c.workspaceRef("workspace", *in.Workspace)
		if err != nil {
			return nil, err
		}
		filter["workspace"] = strconv.FormatInt(ws.ID, 10)
	}
	list, err := c.a.st.WorkflowTemplates().List(c.ctx(), store.Query{Limit: 2, Filter: filter, Viewer: c.viewer()})
	if err != nil {
		return nil, err
	}
	switch len(list) {
	case 0:
		return nil, invalidField("template", "no workflow template named %q", r.name)
	case 1:
		return &list[0], nil
	}
	return nil, invalidField("template", "several workspaces have a workflow template named %q: give its id, or the workspace", r.name)
}

func startWorkflow(c *call) error {
	if err := c.requireUser(); err != nil {
		return err
	}
	if err := c.noQuery(); err != nil {
		return err
	}
	var in workflowInput
	if err := c.decode(workflowSpec, &in); err != nil {
		return err
	}
	tmpl, err := c.templateRef(&in)
	if err != nil {
		return err
	}
	if err := c.contributorOf(tmpl.WorkspaceID); err != nil {
		return err
	}
	var params map[string]string
	if in.Parameters != nil {
		params = *in.Parameters
	}
	creator := c.user().ID
	root, err := workflow.Start(c.ctx(), c.a.st, tmpl, params, &creator)
	if err != nil {
		return templateError(err, map[string]string{"params": "parameters"})
	}
	v, err := c.view(root)
	if err != nil {
		return err
	}
	return c.created(Prefix+"workflows/"+strconv.FormatInt(root.ID, 10)+"/", v)
}

// abortWorkflow aborts the root and, in the same transaction, every child
// that has not finished; the runners of its running steps stop them,
// wherever they are connected.
func abortWorkflow(c *call) error {
	if err := c.requireUser(); err != nil {
		return err
	}
	if err := c.noQuery(); err != nil {
		return err
	}
	root, err := workflowRoot(c)
	if err != nil {
		return err
	}
	if err := c.contributorOf(root.WorkspaceID); err != nil {
		return err
	}
	var in abortInput
	if err := c.decode(abortSpec, &in); err != nil {
		return err
	}
	reason := fmt.Sprintf("aborted by %s", c.user().Username)
	if in.Reason != nil && *in.Reason != "" {
		reason += ": " + *in.Reason
	}
	// the runners of its running steps hear of it from the store's hook
	if _, err := c.a.st.AbortWorkRequest(c.ctx(), root.ID, reason, c.viewer()); err != nil {
		return err
	}
	root, err = c.a.st.WorkRequests().Get(c.ctx(), root.ID, nil)
	if err != nil {
		return err
	}
	v, err := c.view(root)
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, v)
}
