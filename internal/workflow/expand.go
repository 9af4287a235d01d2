package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/tasks"
)

// MaxParamBytes bounds the value of one workflow parameter.
const MaxParamBytes = 4096

// Workflow is a template expanded with its parameters: a root Workflow work
// request and its children, ready for store.SubmitWorkflow, which creates
// them all in one transaction.
type Workflow struct {
	Root  *model.WorkRequest
	Steps []store.WorkflowStep
}

// Expand turns the template and the parameters of one run into a workflow.
// params are the run's parameters (`--param k=v`): every {{params.NAME}}
// that task data uses must be given, either here or as a static parameter
// of the template; a static parameter cannot be overridden; a parameter
// the template does not use is refused (it is most likely a typo). The
// error is an *Error whose paths are params.NAME.
//
// The root has task type Workflow, the template's kind as task name, the
// template's workspace and priority, and as data the template's name and
// the parameters of the run. A sequence's steps each depend on the one
// before; a matrix's runs depend on nothing and its then-step on all of
// them. The caller sets CreatedBy on the root (children inherit it).
func (t *Template) Expand(params map[string]string) (*Workflow, error) {
	c, err := t.compile()
	if err != nil {
		return nil, err
	}
	var ps problems
	merged := map[string]string{}
	for k, v := range t.Parameters {
		merged[k] = v
	}
	for _, k := range sortedKeys(params) {
		v, p := params[k], field("params", k)
		switch fixed, static := t.Parameters[k]; {
		case !paramNamePattern.MatchString(k):
			ps.add(p, "%q is not a valid parameter name", k)
		case static:
			ps.add(p, "is fixed by the template to %q", fixed)
		case c.params[k] == nil:
			ps.add(p, "the template does not use this parameter%s", t.takesList())
		case len(v) > MaxParamBytes:
			ps.add(p, "is longer than %d bytes", MaxParamBytes)
		default:
			merged[k] = v
		}
	}
	for _, name := range c.paramOrder {
		if _, ok := merged[name]; !ok {
			ps.add(field("params", name), "is required (used by %s)", strings.Join(c.params[name], ", "))
		}
	}
	if err := ps.err(); err != nil {
		return nil, err
	}

	wf, paths := c.expand(func(name string) string { return merged[name] })
	data, _ := json.Marshal(map[string]any{"template": t.Name, "parameters": merged})
	wf.Root.Data = data
	c.checkTasks(wf, paths, &ps)
	if err := ps.err(); err != nil {
		return nil, err
	}
	return wf, nil
}

// expand builds the workflow with param's values for {{params.NAME}}; it
// also returns, for each step, the path of its definition in the template.
func (c *compiled) expand(param func(name string) string) (*Workflow, []string) {
	t := c.t
	wf := &Workflow{Root: &model.WorkRequest{
		TaskType: model.TaskWorkflow, TaskName: string(t.Kind), WorkspaceID: t.WorkspaceID,
		Data: json.RawMessage("{}"), Priority: t.Priority,
	}}
	if t.ID != 0 {
		id := t.ID
		wf.Root.WorkflowTemplateID = &id
	}
	var paths []string
	add := func(path string, st *Step, name string, matrix map[string]string, after []int) {
		lookup := func(v string) string {
			if k, ok := strings.CutPrefix(v, "params."); ok {
				return param(k)
			}
			if k, ok := strings.CutPrefix(v, "matrix."); ok {
				return matrix[k]
			}
			return ""
		}
		td, _ := substitute(st.TaskData, lookup).(map[string]any)
		if td == nil {
			td = map[string]any{}
		}
		for k, v := range matrix {
			td[k] = v
		}
		raw, _ := json.Marshal(td)
		retries := DefaultMaxRetries
		if st.MaxRetries != nil {
			retries = *st.MaxRetries
		}
		wf.Steps = append(wf.Steps, store.WorkflowStep{Request: &model.WorkRequest{
			TaskType: st.TaskType, TaskName: st.TaskName, WorkspaceID: t.WorkspaceID, Data: raw,
			Priority: t.Priority, StepName: name, MaxRetries: retries,
		}, After: after})
		paths = append(paths, path)
	}
	switch t.Kind {
	case KindSequence:
		for i := range t.Steps {
			var after []int
			if i > 0 {
				after = []int{i - 1}
			}
			add(index("steps", i), &t.Steps[i], t.Steps[i].Name, nil, after)
		}
	case KindMatrix:
		var all []int
		for _, combo := range t.combinations() {
			all = append(all, len(wf.Steps))
			add("task", t.Task, matrixStepName(t.Task.Name, t.Matrix, combo), combo, nil)
		}
		if t.Then != nil {
			add("then", t.Then, t.Then.Name, nil, all)
		}
	}
	return wf, paths
}

// checkTasks validates every step's task as the API validates a single
// work request (package tasks: the task exists for its type, its data is
// well-formed), reporting each template step once, under its path.
func (c *compiled) checkTasks(wf *Workflow, paths []string, ps *problems) {
	seen := map[string]bool{}
	for i, st := range wf.Steps {
		if seen[paths[i]] {
			continue
		}
		err := tasks.Validate(st.Request)
		if err == nil {
			continue
		}
		seen[paths[i]] = true
		var te *tasks.Error
		if errors.As(err, &te) {
			p := paths[i]
			if te.Field != "" {
				p = field(p, te.Field)
			}
			ps.add(p, "%s", te.Message)
			continue
		}
		ps.add(paths[i], "%v", err)
	}
}

// takesList is " (it takes a, b)", or " (it takes none)".
func (t *Template) takesList() string {
	names := t.RequiredParameters()
	if len(names) == 0 {
		return " (it takes none)"
	}
	return " (it takes " + strings.Join(names, ", ") + ")"
}

// RequiredParameters lists the names of the parameters a workflow of this
// template must be given (those its task data uses that are not static),
// sorted, for `kiln template show` and for error messages.
func (t *Template) RequiredParameters() []string {
	c, err := t.compile()
	if err != nil {
		return nil
	}
	var out []string
	for _, name := range c.paramOrder {
		if _, static := t.Parameters[name]; !static {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// combinations lists the matrix's combinations: keys in sorted order, the
// first key varying slowest, values in the order written.
func (t *Template) combinations() []map[string]string {
	keys := sortedKeys(t.Matrix)
	out := []map[string]string{{}}
	for _, k := range keys {
		var next []map[string]string
		for _, base := range out {
			for _, v := range t.Matrix[k] {
				m := make(map[string]string, len(base)+1)
				for bk, bv := range base {
					m[bk] = bv
				}
				m[k] = v
				next = append(next, m)
			}
		}
		out = next
	}
	return out
}

// matrixStepName is NAME-VALUE[-VALUE…], the values in key order.
func matrixStepName(name string, matrix map[string][]string, combo map[string]string) string {
	parts := []string{name}
	for _, k := range sortedKeys(matrix) {
		parts = append(parts, combo[k])
	}
	return strings.Join(parts, "-")
}

// substitute copies a task-data tree with the variables of its strings
// replaced.
func substitute(v any, lookup func(string) string) any {
	switch t := v.(type) {
	case string:
		return parseText(t).render(lookup)
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[k] = substitute(e, lookup)
		}
		return m
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = substitute(e, lookup)
		}
		return out
	}
	return v
}

// Submitter creates a workflow in one transaction; store.Store is one.
type Submitter interface {
	SubmitWorkflow(ctx context.Context, root *model.WorkRequest, steps []store.WorkflowStep) error
}

// Start starts a workflow of a stored template for a user: it reads the
// template, expands it with params and submits root and children in one
// transaction (which also records the user's activity in the scope, for
// the user_activity histogram). It returns the root.
func Start(ctx context.Context, st Submitter, tmpl *model.WorkflowTemplate, params map[string]string, createdBy *int64) (*model.WorkRequest, error) {
	t, err := FromModel(tmpl)
	if err != nil {
		return nil, err
	}
	wf, err := t.Expand(params)
	if err != nil {
		return nil, err
	}
	wf.Root.CreatedBy = createdBy
	if err := st.SubmitWorkflow(ctx, wf.Root, wf.Steps); err != nil {
		return nil, err
	}
	return wf.Root, nil
}
