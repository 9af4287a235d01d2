package workflow

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/model"
)

// Kind is the shape of a workflow. It is stored as the template's
// task_name, which is also the task name of every workflow root started
// from it, so the public work_requests and workflow_templates families
// count workflows by kind.
type Kind string

// The workflow kinds.
const (
	// KindSequence runs its steps one after the other; each step waits for
	// the previous one to succeed.
	KindSequence Kind = "sequence"
	// KindMatrix runs one task once per combination of the matrix values,
	// all at once, then optionally one more step that needs all of them.
	KindMatrix Kind = "matrix"
)

// Kinds lists the workflow kinds, for messages and documentation.
var Kinds = []Kind{KindSequence, KindMatrix}

// Template is a workflow template as users write it (YAML or JSON):
//
//	name: build-all
//	workspace: main
//	kind: matrix
//	parameters: {suite: bookworm}
//	matrix: {host_architecture: [amd64, i386, arm64]}
//	task: {name: build, task_type: Worker, task_name: command, task_data: {...}}
//	then: {name: publish, task_type: Server, task_name: noop}
//	metrics: [...]
//
// It is stored as a model.WorkflowTemplate: kind becomes task_name, the
// workflow-level metrics become metrics, and everything that shapes the
// work (parameters, steps, matrix, task, then) is kept in
// static_parameters, which is where Debusine keeps a workflow's fixed task
// data. The API accepts both spellings (kind or task_name, the fields at
// the top level or inside static_parameters), so that a template read back
// from the API can be sent again (without its read-only id and
// created_at).
type Template struct {
	// ID and WorkspaceID are set by FromModel; they are not part of the
	// document.
	ID          int64 `json:"-"`
	WorkspaceID int64 `json:"-"`

	Name string `json:"name"`
	// Workspace is a workspace name or id; the API resolves it.
	Workspace string `json:"workspace,omitempty"`
	Kind      Kind   `json:"kind"`
	// Priority is given to the root and to every child; the scheduler
	// takes higher priorities first.
	Priority int `json:"priority,omitempty"`
	// Parameters are static parameters: values for {{params.NAME}} that
	// the template fixes and a workflow cannot override.
	Parameters map[string]string `json:"parameters,omitempty"`
	// Steps are the steps of a sequence, in order.
	Steps []Step `json:"steps,omitempty"`
	// Matrix maps a task-data key to the values a matrix fans out over;
	// with several keys every combination runs.
	Matrix map[string][]string `json:"matrix,omitempty"`
	// Task is the task a matrix runs for every combination.
	Task *Step `json:"task,omitempty"`
	// Then is an optional step of a matrix that runs once all of Task's
	// runs succeeded.
	Then *Step `json:"then,omitempty"`
	// Metrics are emitted when a workflow of this template finishes.
	Metrics []Metric `json:"metrics,omitempty"`
}

// Step is one task of a workflow.
type Step struct {
	// Name identifies the step in the workflow ({{task.name}}, the
	// children's step_name). Matrix runs are named NAME-VALUE[-VALUE…].
	Name     string         `json:"name"`
	TaskType model.TaskType `json:"task_type"`
	TaskName string         `json:"task_name"`
	// TaskData is the task's parameters; strings may use {{params.NAME}}
	// and, in a matrix task, {{matrix.KEY}}.
	TaskData map[string]any `json:"task_data,omitempty"`
	// MaxRetries is how often the step is requeued when its runner is
	// lost before it fails; DefaultMaxRetries when unset.
	MaxRetries *int `json:"max_retries,omitempty"`
	// Metrics are emitted for this step when its workflow finishes.
	Metrics []Metric `json:"metrics,omitempty"`
}

// DefaultMaxRetries is a step's max_retries when the template sets none;
// it matches the database default for work requests.
const DefaultMaxRetries = 3

// Metric is a Prometheus metric that a template or a step declares (SPEC
// §6, after Argo's template metrics). Exactly one of Counter, Gauge and
// Histogram is set.
type Metric struct {
	// Name is emitted with the prefix MetricPrefix.
	Name   string  `json:"name"`
	Help   string  `json:"help"`
	Labels []Label `json:"labels,omitempty"`
	// When is a condition such as `{{status}} == Succeeded`; the metric
	// is emitted only when it holds. Empty means always.
	When      string     `json:"when,omitempty"`
	Counter   *Counter   `json:"counter,omitempty"`
	Gauge     *Gauge     `json:"gauge,omitempty"`
	Histogram *Histogram `json:"histogram,omitempty"`
}

// Label is one label of a declared metric; Value may use the variables of
// its level.
type Label struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Counter adds Value (default "1") at each emission.
type Counter struct {
	Value string `json:"value,omitempty"`
}

// Gauge is set to Value at each emission.
type Gauge struct {
	Value string `json:"value"`
}

// Histogram observes Value at each emission. Buckets are upper bounds,
// strictly increasing; +Inf is implicit.
type Histogram struct {
	Buckets []float64 `json:"buckets"`
	Value   string    `json:"value"`
}

// staticParameters is what a template keeps in the model's
// static_parameters.
type staticParameters struct {
	Parameters map[string]string   `json:"parameters,omitempty"`
	Steps      []Step              `json:"steps,omitempty"`
	Matrix     map[string][]string `json:"matrix,omitempty"`
	Task       *Step               `json:"task,omitempty"`
	Then       *Step               `json:"then,omitempty"`
}

// Parse reads a template document and validates it. name is the file
// name: ".json" files are JSON, anything else is YAML (which also reads
// JSON, but with less precise syntax errors). The error is an *Error
// listing every problem, or a syntax error.
func Parse(name string, data []byte) (*Template, error) {
	if strings.EqualFold(filepath.Ext(name), ".json") {
		return ParseJSON(data)
	}
	return ParseYAML(data)
}

// ParseYAML reads and validates a YAML template.
func ParseYAML(data []byte) (*Template, error) {
	tree, err := readYAML(data)
	if err != nil {
		return nil, &Error{Problems: []Problem{{Message: err.Error()}}}
	}
	return fromTree(tree)
}

// ParseJSON reads and validates a JSON template, such as an API body.
func ParseJSON(data []byte) (*Template, error) {
	tree, err := readJSON(data)
	if err != nil {
		return nil, &Error{Problems: []Problem{{Message: err.Error()}}}
	}
	return fromTree(tree)
}

// readOnly are fields of the stored template that the API shows but a
// document may not set.
var readOnly = map[string]bool{"id": true, "created_at": true}

// fromTree checks and decodes a document tree, accepting the model's
// spelling (task_name, static_parameters) beside the document's.
func fromTree(tree any) (*Template, error) {
	var ps problems
	root, ok := tree.(*object)
	if !ok {
		ps.add("", "a template must be an object, not %s", describe(tree))
		return nil, ps.err()
	}
	top := &object{vals: map[string]any{}}
	fromStatic := map[string]bool{}
	for _, k := range root.keys {
		v := root.vals[k]
		switch {
		case readOnly[k]:
			ps.add(k, "%q is read-only: kiln sets it", k)
		case k == "$schema": // for editors
		case k == "task_name":
			if other, ok := root.get("kind"); ok && !sameScalar(other, v) {
				ps.add("task_name", "is the stored name of kind and differs from it; give only kind")
				continue
			}
			top.put("kind", v)
		case k == "static_parameters":
			sp, ok := v.(*object)
			if !ok {
				if v != nil {
					ps.add(k, "must be an object, not %s", describe(v))
				}
				continue
			}
			for _, sk := range sp.keys {
				switch {
				case !staticKeys[sk]:
					ps.add(field(k, sk), "unknown field%s; static_parameters holds parameters, steps, matrix, task and then",
						suggest(sk, []string{"matrix", "parameters", "steps", "task", "then"}))
				case root.has(sk):
					ps.add(field(k, sk), "is also given at the top level; give it once")
				default:
					top.put(sk, sp.vals[sk])
					fromStatic[sk] = true
				}
			}
		default:
			top.put(k, v)
		}
	}
	t := fromDocument(top, fromStatic, true, &ps)
	if err := ps.err(); err != nil {
		return nil, err
	}
	return t, nil
}

// staticKeys are the fields a template keeps in static_parameters.
var staticKeys = map[string]bool{"parameters": true, "steps": true, "matrix": true, "task": true, "then": true}

// fromDocument checks a template document against the schema and, when
// it decodes despite what the schema found, against what the schema
// cannot say (steps' tasks too when withTasks and the schema found
// nothing), so that every problem is reported at once; it returns the
// template when ps holds no problem. static names the top-level fields
// that were written inside static_parameters, where the schema's
// problems then point.
func fromDocument(top *object, static map[string]bool, withTasks bool, ps *problems) *Template {
	d := newDocument(top, ps)
	found := d.check()
	for i, p := range found {
		if j := strings.IndexAny(p.Path, ".["); static[p.Path] || j > 0 && static[p.Path[:j]] {
			found[i].Path = "static_parameters." + p.Path
		}
	}
	ps.list = append(ps.list, found...)
	t := &Template{}
	if err := d.decodeInto(t); err != nil {
		if len(ps.list) == 0 {
			ps.add("", "%v", err)
		}
		return nil
	}
	for _, p := range t.beyondSchema(withTasks && len(found) == 0) {
		if !blames(found, p.Path) {
			ps.list = append(ps.list, p)
		}
	}
	if len(ps.list) > 0 {
		return nil
	}
	return t
}

// blames says whether one of the problems is about path or a field that
// holds it.
func blames(problems []Problem, path string) bool {
	for _, p := range problems {
		if path == p.Path || strings.HasPrefix(path, p.Path+".") || strings.HasPrefix(path, p.Path+"[") {
			return true
		}
	}
	return false
}

func sameScalar(a, b any) bool {
	x, ok1 := scalarText(a)
	y, ok2 := scalarText(b)
	return ok1 && ok2 && x == y
}

// Model is the template as the store keeps it. The workspace id must have
// been resolved into t.WorkspaceID.
func (t *Template) Model() (*model.WorkflowTemplate, error) {
	static, err := json.Marshal(staticParameters{
		Parameters: t.Parameters, Steps: t.Steps, Matrix: t.Matrix, Task: t.Task, Then: t.Then,
	})
	if err != nil {
		return nil, err
	}
	metrics := []byte("[]")
	if len(t.Metrics) > 0 {
		if metrics, err = json.Marshal(t.Metrics); err != nil {
			return nil, err
		}
	}
	return &model.WorkflowTemplate{
		ID: t.ID, Name: t.Name, TaskName: string(t.Kind), WorkspaceID: t.WorkspaceID,
		StaticData: static, Priority: t.Priority, Metrics: metrics,
	}, nil
}

// FromModel reads a stored template back and checks it again (all of
// Validate but the task check, so that a template saved before a task was
// renamed still emits its metrics), so that a template stored by an older
// kiln with looser rules is reported rather than half-used. The schema's
// problems name the stored form's paths (static_parameters.steps[0]…).
func FromModel(m *model.WorkflowTemplate) (*Template, error) {
	var ps problems
	top := &object{vals: map[string]any{}}
	top.put("name", m.Name)
	top.put("kind", m.TaskName)
	top.put("priority", json.Number(strconv.Itoa(m.Priority)))
	static := map[string]bool{}
	if len(bytes.TrimSpace(m.StaticData)) > 0 {
		tree, err := readJSON(m.StaticData)
		if err != nil {
			ps.add("static_parameters", "%v", err)
		} else if o, ok := tree.(*object); !ok {
			ps.add("static_parameters", "must be an object, not %s", describe(tree))
		} else {
			for _, k := range o.keys {
				if !staticKeys[k] {
					ps.add(field("static_parameters", k), "unknown field; static_parameters holds parameters, steps, matrix, task and then")
					continue
				}
				top.put(k, o.vals[k])
				static[k] = true
			}
		}
	}
	if len(bytes.TrimSpace(m.Metrics)) > 0 {
		tree, err := readJSON(m.Metrics)
		if err != nil {
			ps.add("metrics", "%v", err)
		} else {
			top.put("metrics", tree)
		}
	}
	if err := ps.err(); err != nil {
		return nil, err
	}
	t := fromDocument(top, static, false, &ps)
	if err := ps.err(); err != nil {
		return nil, err
	}
	t.ID, t.WorkspaceID = m.ID, m.WorkspaceID
	return t, nil
}
