package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/workflow"
)

// templateInput is empty: templates are read by package workflow's own
// decoder, which names the nested field at fault (steps[0].task_data…).
type templateInput struct{}

// workflowTemplateRoutes: anyone reads the templates of the workspaces
// they see; contributors and owners of a workspace create, change and
// delete its templates. A body is a template document (package workflow:
// name, workspace, kind, parameters, steps or matrix/task/then, metrics),
// as `kiln template create -f` sends it, or the stored form that GET
// answers (task_name, static_parameters), so that what was read can be
// sent back. Everything is validated before it is stored, metrics
// included, with an error naming the field. Priorities above 0 are for
// admins, as for work requests. A template that has started workflows
// cannot be deleted (409). workflow-templates/schema/ answers the JSON
// Schema templates are checked against, for editors.
func (a *API) workflowTemplateRoutes() []Route {
	res := &resource[model.WorkflowTemplate, templateInput]{
		a: a, name: "workflow template", path: "workflow-templates", table: a.st.WorkflowTemplates(),
		id: func(o *model.WorkflowTemplate) int64 { return o.ID },
		filters: map[string]filterFunc{
			"workspace": workspaceFilter,
			"name":      textFilter,
			"task_name": enumFilter(string(workflow.KindSequence), string(workflow.KindMatrix)),
		},
		read:    (*call).anyone,
		write:   (*call).requireUser,
		allow:   func(c *call, t *model.WorkflowTemplate) error { return c.contributorOf(t.WorkspaceID) },
		present: presentTemplate,
	}
	list := Prefix + "workflow-templates/{$}"
	item := Prefix + "workflow-templates/{id}/{$}"
	var routes []Route
	for _, r := range res.routes() {
		switch r.Pattern {
		case "GET " + list, "GET " + item, "DELETE " + item:
			routes = append(routes, r)
		}
	}
	return append(routes,
		Route{"POST " + list, a.endpoint(func(c *call) error { return createTemplate(c, res) })},
		Route{"PATCH " + item, a.endpoint(func(c *call) error { return patchTemplate(c, res) })},
		Route{"GET " + Prefix + "workflow-templates/schema/{$}", a.endpoint(templateSchema)},
	)
}

// templateSchema answers the JSON Schema of workflow templates, for
// editors (`# yaml-language-server: $schema=URL`); anyone may read it.
func templateSchema(c *call) error {
	if err := c.anyone(); err != nil {
		return err
	}
	c.w.Header().Set("Content-Type", "application/schema+json")
	_, err := c.w.Write(workflow.Schema())
	return err
}

func presentTemplate(t *model.WorkflowTemplate) {
	if len(t.Metrics) == 0 || string(t.Metrics) == "null" {
		t.Metrics = json.RawMessage("[]")
	}
}

// jsonBody reads the request body as a JSON object, with the API's media
// type check and size limit.
func (c *call) jsonBody() (map[string]json.RawMessage, error) {
	if err := checkJSONMediaType(c.r.Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, c.a.opts.MaxBodyBytes))
	if err != nil {
		return nil, bodyError(err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errorf(http.StatusBadRequest, "", "the request body is empty: send a JSON object")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return nil, errorf(http.StatusBadRequest, "", "the request body must be a JSON object (a workflow template)")
	}
	if err := checkText(body); err != nil {
		return nil, err
	}
	return obj, nil
}

// fmtAny prints a JSON scalar as the user wrote it.
func fmtAny(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64)
	}
	return ""
}

// templateError turns a template's validation problems into a 400 that
// blames the first field and lists them all.
func templateError(err error, prefix map[string]string) error {
	var we *workflow.Error
	if !errors.As(err, &we) {
		return err
	}
	for i := range we.Problems {
		for from, to := range prefix {
			if p := we.Problems[i].Path; p == from || strings.HasPrefix(p, from+".") || strings.HasPrefix(p, from+"[") {
				we.Problems[i].Path = to + strings.TrimPrefix(p, from)
			}
		}
	}
	return invalidField(we.Problems[0].Path, "%s", we.Error())
}

// templateWorkspace resolves a template's workspace: an id, "scope/name",
// or a bare name when exactly one workspace the caller sees has it.
func (c *call) templateWorkspace(s string) (*model.Workspace, error) {
	if s == "" {
		return nil, required("workspace")
	}
	if id, err := strconv.ParseInt(s, 10, 64); err == nil && id > 0 {
		return c.workspaceRef("workspace", ref{id: id})
	}
	if strings.Contains(s, "/") {
		return c.workspaceRef("workspace", ref{name: s})
	}
	v := c.viewer()
	v.ScopeID = nil
	list, err := c.a.st.Workspaces().List(c.ctx(), store.Query{Limit: 2, Filter: map[string]string{"name": s}, Viewer: v})
	if err != nil {
		return nil, err
	}
	switch len(list) {
	case 0:
		return nil, invalidField("workspace", "no workspace named %q", s)
	case 1:
		return &list[0], nil
	}
	return nil, invalidField("workspace", "several scopes have a workspace named %q: give it as \"scope/%s\"", s, s)
}

// saveTemplate checks what only the server can check — the caller's role
// and priority, and that its metrics agree with other templates' — and
// returns the template to store.
func saveTemplate(c *call, t *workflow.Template, ws *model.Workspace) (*model.WorkflowTemplate, error) {
	if err := c.requireRole(ws, model.RoleContributor); err != nil {
		return nil, err
	}
	if t.Priority > 0 && !c.isAdmin() {
		return nil, forbidden("only admins may give workflow templates a priority above 0")
	}
	t.WorkspaceID = ws.ID
	var others []*workflow.Template
	q := store.Query{Limit: store.MaxPageSize}
	for {
		page, err := c.a.st.WorkflowTemplates().List(c.ctx(), q)
		if err != nil {
			return nil, err
		}
		for i := range page {
			if page[i].ID == t.ID {
				continue
			}
			if o, err := workflow.FromModel(&page[i]); err == nil {
				others = append(others, o)
			}
		}
		if len(page) < q.Limit {
			break
		}
		q.After = page[len(page)-1].ID
	}
	if err := workflow.CheckShared(t, others); err != nil {
		return nil, templateError(err, nil)
	}
	return t.Model()
}

func createTemplate(c *call, res *resource[model.WorkflowTemplate, templateInput]) error {
	if err := c.requireUser(); err != nil {
		return err
	}
	if err := c.noQuery(); err != nil {
		return err
	}
	body, err := c.jsonBody()
	if err != nil {
		return err
	}
	raw, _ := json.Marshal(body)
	t, err := workflow.ParseJSON(raw)
	if err != nil {
		return templateError(err, nil)
	}
	ws, err := c.templateWorkspace(t.Workspace)
	if err != nil {
		return err
	}
	m, err := saveTemplate(c, t, ws)
	if err != nil {
		return err
	}
	if err := c.a.st.WorkflowTemplates().Create(c.ctx(), m); err != nil {
		return err
	}
	presentTemplate(m)
	return c.created(res.itemPath(m.ID), m)
}

// patchTemplate replaces the top-level fields the body gives (kind,
// steps, metrics, …) and validates the result as a whole.
func patchTemplate(c *call, res *resource[model.WorkflowTemplate, templateInput]) error {
	cur, err := res.target(c)
	if err != nil {
		return err
	}
	body, err := c.jsonBody()
	if err != nil {
		return err
	}
	// the stored template as a document, read without validation so that
	// a template that an older kiln accepted can still be fixed
	name, _ := json.Marshal(cur.Name)
	kind, _ := json.Marshal(cur.TaskName)
	merged := map[string]json.RawMessage{"name": name, "kind": kind,
		"priority": json.RawMessage(strconv.Itoa(cur.Priority)), "metrics": cur.Metrics}
	var static map[string]json.RawMessage
	if err := json.Unmarshal(cur.StaticData, &static); err == nil {
		for k, v := range static {
			merged[k] = v
		}
	}
	for k, v := range body {
		switch k {
		case "workspace":
			var s any
			if err := json.Unmarshal(v, &s); err != nil {
				return invalidField(k, "%q must be an id or a name", k)
			}
			w, err := c.templateWorkspace(fmtAny(s))
			if err != nil {
				return err
			}
			if w.ID != cur.WorkspaceID {
				return invalidField("workspace", "a template cannot move to another workspace")
			}
			continue
		case "task_name":
			k = "kind"
		case "static_parameters":
			var sp map[string]json.RawMessage
			if err := json.Unmarshal(v, &sp); err != nil || sp == nil {
				return invalidField(k, "%q must be an object", k)
			}
			for sk, sv := range sp {
				merged[sk] = sv
			}
			continue
		}
		merged[k] = v
	}
	raw, _ := json.Marshal(merged)
	t, err := workflow.ParseJSON(raw)
	if err != nil {
		return templateError(err, nil)
	}
	t.ID = cur.ID
	ws, err := c.workspaceOf(cur.WorkspaceID)
	if err != nil {
		return err
	}
	m, err := saveTemplate(c, t, ws)
	if err != nil {
		return err
	}
	updated, err := c.a.st.WorkflowTemplates().Update(c.ctx(), cur.ID, c.viewer(), func(o *model.WorkflowTemplate) error {
		o.Name, o.TaskName, o.StaticData, o.Priority, o.Metrics = m.Name, m.TaskName, m.StaticData, m.Priority, m.Metrics
		return nil
	})
	if err != nil {
		return err
	}
	presentTemplate(updated)
	return c.reply(http.StatusOK, updated)
}
