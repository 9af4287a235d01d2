package workflow

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
)

func steps(wf *Workflow) (names []string, after [][]int) {
	for _, s := range wf.Steps {
		names = append(names, s.Request.StepName)
		after = append(after, s.After)
	}
	return names, after
}

func dataOf(t *testing.T, wr *model.WorkRequest) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(wr.Data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestExpandSequence(t *testing.T) {
	tmpl := loadFixture(t, "sequence.yaml")
	tmpl.Priority = 4
	wf, err := tmpl.Expand(map[string]string{"ref": "v1.2"})
	if err != nil {
		t.Fatal(err)
	}
	root := wf.Root
	if root.TaskType != model.TaskWorkflow || root.TaskName != "sequence" || root.WorkspaceID != 1 || root.Priority != 4 ||
		root.WorkflowTemplateID == nil || *root.WorkflowTemplateID != 1 {
		t.Fatalf("root %+v", root)
	}
	if got := dataOf(t, root); !reflect.DeepEqual(got, map[string]any{"template": "test-and-deploy",
		"parameters": map[string]any{"ref": "v1.2", "target": "staging"}}) {
		t.Fatalf("root data %v", got)
	}
	names, after := steps(wf)
	if !reflect.DeepEqual(names, []string{"test", "wait", "deploy"}) || !reflect.DeepEqual(after, [][]int{nil, {0}, {1}}) {
		t.Fatalf("steps %v after %v", names, after)
	}
	test, deploy := wf.Steps[0].Request, wf.Steps[2].Request
	if test.TaskType != model.TaskWorker || test.TaskName != "command" || test.Priority != 4 || test.MaxRetries != DefaultMaxRetries {
		t.Fatalf("test step %+v", test)
	}
	if got := dataOf(t, test)["script"]; got != "git checkout v1.2 && make test" {
		t.Fatalf("script %q", got)
	}
	if got := dataOf(t, deploy); got["target"] != "staging" || got["notes"] != "{{ not a variable }} stays as written" {
		t.Fatalf("deploy data %v", got)
	}
	if got := tmpl.RequiredParameters(); !reflect.DeepEqual(got, []string{"ref"}) {
		t.Fatalf("required parameters %v", got)
	}
}

func TestExpandMatrix(t *testing.T) {
	tmpl := loadFixture(t, "matrix-build.yaml")
	wf, err := tmpl.Expand(map[string]string{"version": "2.0"})
	if err != nil {
		t.Fatal(err)
	}
	names, after := steps(wf)
	if !reflect.DeepEqual(names, []string{"build-amd64", "build-i386", "build-arm64", "publish"}) ||
		!reflect.DeepEqual(after, [][]int{nil, nil, nil, {0, 1, 2}}) {
		t.Fatalf("steps %v after %v", names, after)
	}
	for i, arch := range []string{"amd64", "i386", "arm64"} {
		want := map[string]any{"host_architecture": arch, "backend": "auto", "label": "hello 2.0 on " + arch}
		if got := dataOf(t, wf.Steps[i].Request); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s data %v, want %v", names[i], got, want)
		}
		if wf.Steps[i].Request.MaxRetries != 1 || wf.Steps[i].Request.Priority != 5 {
			t.Fatalf("%s: %+v", names[i], wf.Steps[i].Request)
		}
	}

	// two keys: every combination, the first key (sorted) varying slowest
	tmpl, err = ParseYAML([]byte(`
name: two
kind: matrix
matrix: {host_architecture: [amd64, arm64], backend: [unshare, host]}
task: {name: build, task_type: Worker, task_name: noop, task_data: {id: "{{matrix.backend}}/{{matrix.host_architecture}}"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	wf, err = tmpl.Expand(nil)
	if err != nil {
		t.Fatal(err)
	}
	names, after = steps(wf)
	if !reflect.DeepEqual(names, []string{"build-unshare-amd64", "build-unshare-arm64", "build-host-amd64", "build-host-arm64"}) ||
		!reflect.DeepEqual(after, [][]int{nil, nil, nil, nil}) {
		t.Fatalf("steps %v after %v", names, after)
	}
	if got := dataOf(t, wf.Steps[2].Request); got["id"] != "host/amd64" || got["backend"] != "host" || got["host_architecture"] != "amd64" {
		t.Fatalf("data %v", got)
	}
	if wf.Root.WorkflowTemplateID != nil {
		t.Fatal("an unsaved template gave its root a template id")
	}
}

func TestExpandParameterErrors(t *testing.T) {
	tmpl := loadFixture(t, "sequence.yaml")
	for _, c := range []struct {
		params map[string]string
		want   []string
	}{
		{nil, []string{"params.ref: is required (used by steps[0].task_data.script)"}},
		{map[string]string{"ref": "x", "target": "prod"}, []string{`params.target: is fixed by the template to "staging"`}},
		{map[string]string{"ref": "x", "rfe": "y"}, []string{"params.rfe: the template does not use this parameter (it takes ref)"}},
		{map[string]string{"ref": strings.Repeat("x", MaxParamBytes+1)}, []string{"params.ref: is longer than 4096 bytes"}},
		{map[string]string{"bad name": "x"}, []string{`params["bad name"]: "bad name" is not a valid parameter name`,
			"params.ref: is required"}},
	} {
		_, err := tmpl.Expand(c.params)
		if err == nil {
			t.Errorf("%v: accepted", c.params)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not contain %q", c.params, err, w)
			}
		}
	}
}

// Task data that uses parameters is checked when a workflow starts, with
// the run's values; the rest is checked when the template is saved.
func TestTaskDataCheckedWithParameters(t *testing.T) {
	tmpl, err := ParseYAML([]byte(`
name: t
kind: sequence
steps:
  - name: build
    task_type: Worker
    task_name: command
    task_data: {host_architecture: amd64, script: make, timeout: "{{params.timeout}}"}
`))
	if err != nil {
		t.Fatalf("a parameterised timeout was refused on save: %v", err)
	}
	if _, err := tmpl.Expand(map[string]string{"timeout": "10m"}); err != nil {
		t.Fatal(err)
	}
	_, err = tmpl.Expand(map[string]string{"timeout": "soon"})
	if err == nil || !strings.HasPrefix(err.Error(), "steps[0].task_data") {
		t.Fatalf("a bad timeout gave %v, want an error on steps[0].task_data", err)
	}
}

func TestCheckShared(t *testing.T) {
	parse := func(name, metric string) *Template {
		t.Helper()
		tmpl, err := ParseYAML([]byte("name: " + name + `
kind: sequence
steps: [{name: s, task_type: Wait, task_name: delay}]
metrics: [` + metric + `]
`))
		if err != nil {
			t.Fatal(err)
		}
		return tmpl
	}
	counter := `{name: runs_total, help: Runs., counter: {}}`
	byStatus := `{name: runs_total, help: Runs., counter: {}, labels: [{key: status, value: "{{workflow.status}}"}]}`
	if err := CheckShared(parse("a", counter), []*Template{parse("b", counter), parse("c", `{name: other, help: O., gauge: {value: 1}}`)}); err != nil {
		t.Fatalf("alike declarations refused: %v", err)
	}
	err := CheckShared(parse("a", byStatus), []*Template{parse("b", counter)})
	want := `metrics[0].name: "runs_total" is already declared by another workflow template as a counter without labels; declare it the same way (this one is a counter with labels status)`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got %v, want %s", err, want)
	}
}
