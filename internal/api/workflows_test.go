package api_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
	"github.com/kiln-build/kiln/internal/workflow"
)

// workflowFixtures adds a template to each of pub and priv ("pub-build",
// "priv-build") and a running workflow of the private one.
func (e *env) workflowFixtures(ctx context.Context) {
	for _, ws := range []string{"pub", "priv"} {
		tmpl, err := workflow.ParseYAML([]byte("name: " + ws + `-build
kind: sequence
steps:
  - {name: build, task_type: Worker, task_name: noop, task_data: {host_architecture: amd64}}
`))
		e.must(err)
		tmpl.WorkspaceID = e.ids[ws]
		m, err := tmpl.Model()
		e.must(err)
		e.must(e.st.WorkflowTemplates().Create(ctx, m))
		e.ids["tmpl:"+ws] = m.ID
		if ws == "priv" {
			admin := e.ids["admin"]
			root, err := workflow.Start(ctx, e.st, m, nil, &admin)
			e.must(err)
			e.ids["wf:priv"] = root.ID
		}
	}
}

const matrixTemplate = `{
  "name": "build-all", "workspace": "debian/priv", "kind": "matrix",
  "parameters": {"package": "hello"},
  "matrix": {"host_architecture": ["amd64", "i386", "arm64"]},
  "task": {"name": "build", "task_type": "Worker", "task_name": "command",
           "task_data": {"script": "build {{params.package}} {{params.version}}"},
           "metrics": [{"name": "builds_total", "help": "Builds.", "counter": {},
                        "labels": [{"key": "status", "value": "{{status}}"}]}]},
  "then": {"name": "publish", "task_type": "Wait", "task_name": "delay"},
  "metrics": [{"name": "runs_total", "help": "Runs.", "counter": {},
               "labels": [{"key": "status", "value": "{{workflow.status}}"}]}]
}`

func TestWorkflowTemplatesAndWorkflows(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		alice, bob := e.tok["alice"], e.tok["bob"]

		// the schema templates are checked against, for anyone's editor
		sch := e.do("GET", "/api/1.0/workflow-templates/schema/", "", nil).want(t, 200)
		if sch.header.Get("Content-Type") != "application/schema+json" || !bytes.Equal(sch.body, workflow.Schema()) {
			t.Fatalf("schema: %s\n%s", sch.header.Get("Content-Type"), sch.body)
		}

		// create: validated, stored in the model's form
		tm := e.do("POST", "/api/1.0/workflow-templates/", alice, matrixTemplate).want(t, 201).obj(t)
		if tm["task_name"] != "matrix" || tm["workspace"].(float64) != float64(e.ids["priv"]) {
			t.Fatalf("created %v", tm)
		}
		static := tm["static_parameters"].(map[string]any)
		if _, ok := static["matrix"]; !ok {
			t.Fatalf("static_parameters %v", static)
		}
		tid := id(tm)
		tpath := path("/api/1.0/workflow-templates/%d/", tid)

		// what GET shows can be sent back (as a new template, renamed)
		shown := e.do("GET", tpath, alice, nil).want(t, 200).obj(t)
		delete(shown, "id")
		delete(shown, "created_at")
		shown["name"] = "build-all-2"
		e.do("POST", "/api/1.0/workflow-templates/", alice, shown).want(t, 201)

		// refusals name the field
		bad := strings.Replace(matrixTemplate, `"key": "status", "value": "{{workflow.status}}"`, `"key": "bad-key", "value": "x"`, 1)
		bad = strings.Replace(bad, `"build-all"`, `"other"`, 1)
		p := e.do("POST", "/api/1.0/workflow-templates/", alice, bad).wantProblem(t, 400, "metrics[0].labels[0].key")
		if !strings.Contains(p.Detail, `"bad-key" is not a valid label name`) {
			t.Fatalf("detail %q", p.Detail)
		}
		e.do("POST", "/api/1.0/workflow-templates/", alice, matrixTemplate).wantProblem(t, 409, "-")
		e.do("POST", "/api/1.0/workflow-templates/", alice,
			strings.Replace(strings.Replace(matrixTemplate, `"build-all"`, `"x"`, 1), `"kind"`, `"priority": 5, "kind"`, 1)).wantProblem(t, 403, "")
		e.do("POST", "/api/1.0/workflow-templates/", alice, strings.Replace(matrixTemplate, `"debian/priv"`, `"nowhere"`, 1)).
			wantProblem(t, 400, "workspace")
		// another template may not declare runs_total differently
		other := strings.Replace(strings.Replace(matrixTemplate, `"build-all"`, `"y"`, 1),
			`"labels": [{"key": "status", "value": "{{workflow.status}}"}]`, `"labels": []`, 1)
		e.do("POST", "/api/1.0/workflow-templates/", alice, other).wantProblem(t, 400, "metrics[0].name")
		// bob sees no private templates; nor may he write in pub
		e.do("GET", tpath, bob, nil).wantProblem(t, 404, "")
		if list, _ := e.do("GET", "/api/1.0/workflow-templates/", bob, nil).want(t, 200).list(t); len(list) != 1 {
			t.Fatalf("bob sees %d templates, want pub-build only", len(list))
		}

		// patch: the fields given replace the stored ones, then all is checked
		e.do("PATCH", tpath, alice, `{"metrics": []}`).want(t, 200)
		e.do("PATCH", tpath, alice, `{"kind": "dag"}`).wantProblem(t, 400, "kind")
		e.do("PATCH", tpath, alice, `{"workspace": "debian/pub"}`).wantProblem(t, 400, "workspace")

		// start: parameters are checked against the template
		e.do("POST", "/api/1.0/workflows/", alice, `{"template": "build-all"}`).wantProblem(t, 400, "parameters.version")
		e.do("POST", "/api/1.0/workflows/", alice, `{"template": "build-all", "parameters": {"version": "1", "package": "x"}}`).
			wantProblem(t, 400, "parameters.package")
		e.do("POST", "/api/1.0/workflows/", bob, `{"template": "build-all"}`).wantProblem(t, 400, "template")
		wf := e.do("POST", "/api/1.0/workflows/", alice, `{"template": "build-all", "parameters": {"version": "1.0"}}`).want(t, 201).obj(t)
		kids := wf["children"].([]any)
		if wf["task_type"] != "Workflow" || wf["status"] != "running" || len(kids) != 4 {
			t.Fatalf("started %v", wf)
		}
		first := kids[0].(map[string]any)
		if first["step_name"] != "build-amd64" || first["task_data"].(map[string]any)["script"] != "build hello 1.0" {
			t.Fatalf("first child %v", first)
		}
		wpath := path("/api/1.0/workflows/%d/", id(wf))
		if got := e.do("GET", wpath, alice, nil).want(t, 200).obj(t); len(got["children"].([]any)) != 4 {
			t.Fatalf("show %v", got)
		}
		list, _ := e.do("GET", "/api/1.0/workflows/?task_name=matrix", alice, nil).want(t, 200).list(t)
		if len(list) != 1 || id(list[0]) != id(wf) {
			t.Fatalf("list %v", list)
		}
		e.do("GET", path("/api/1.0/workflows/%d/", id(first)), alice, nil).wantProblem(t, 404, "")

		// abort: the children go with the root
		got := e.do("POST", wpath+"abort/", alice, `{"reason": "enough"}`).want(t, 200).obj(t)
		if got["status"] != string(model.StatusAborted) {
			t.Fatalf("aborted %v", got)
		}
		for _, k := range got["children"].([]any) {
			if k.(map[string]any)["status"] != string(model.StatusAborted) {
				t.Fatalf("child %v", k)
			}
		}
		// a template with started workflows stays; one without may go
		e.do("DELETE", tpath, alice, nil).wantProblem(t, 409, "")
		fresh := e.do("GET", "/api/1.0/workflow-templates/?name=build-all-2", alice, nil).want(t, 200)
		l, _ := fresh.list(t)
		e.do("DELETE", path("/api/1.0/workflow-templates/%d/", id(l[0])), alice, nil).want(t, 204)
	})
}
