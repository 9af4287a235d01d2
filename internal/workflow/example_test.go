package workflow_test

import (
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/workflow"
)

// A matrix template fans one task out over architectures, then runs a
// step that needs all of them.
func ExampleTemplate_Expand() {
	tmpl, err := workflow.ParseYAML([]byte(`
name: build-all
kind: matrix
matrix: {host_architecture: [amd64, arm64]}
task:
  name: build
  task_type: Worker
  task_name: command
  task_data: {script: "make VERSION={{params.version}}"}
then: {name: publish, task_type: Wait, task_name: delay}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	wf, err := tmpl.Expand(map[string]string{"version": "1.0"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(wf.Root.TaskType, wf.Root.TaskName)
	for _, s := range wf.Steps {
		fmt.Println(s.Request.StepName, s.After, string(s.Request.Data))
	}
	// Output:
	// Workflow matrix
	// build-amd64 [] {"host_architecture":"amd64","script":"make VERSION=1.0"}
	// build-arm64 [] {"host_architecture":"arm64","script":"make VERSION=1.0"}
	// publish [0 1] {}
}

// Validation names every field that is wrong.
func ExampleParseYAML_errors() {
	_, err := workflow.ParseYAML([]byte(`
name: t
kind: sequence
steps: [{name: s, task_type: Wait, task_name: delay}]
metrics:
  - name: runs
    help: Runs.
    labels: [{key: bad-key, value: "{{status}}"}]
    counter: {}
`))
	for _, p := range err.(*workflow.Error).Problems {
		fmt.Println(p)
	}
	// Output:
	// metrics[0].name: "runs": a counter's name must end in _total (e.g. "runs_total")
	// metrics[0].labels[0].key: "bad-key" is not a valid label name: use letters, digits and _, not starting with a digit
	// metrics[0].labels[0].value: {{status}} is a step-level variable; here (workflow level) use {{workflow.duration}}, {{workflow.name}}, {{workflow.status}}
}

// Metrics is registered on the server's internal registry; Record is
// called (through Recorder) when a workflow's root finishes.
func ExampleMetrics() {
	tmpl, _ := workflow.ParseYAML([]byte(`
name: nightly
kind: sequence
steps: [{name: build, task_type: Wait, task_name: delay}]
metrics:
  - name: runs_total
    help: Nightly runs by status.
    labels: [{key: status, value: "{{workflow.status}}"}]
    counter: {}
`))
	m := workflow.NewMetrics(workflow.MetricsOptions{TTL: 24 * time.Hour, MaxSeries: 100})
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)

	start, end := time.Unix(0, 0), time.Unix(90, 0)
	root := &model.WorkRequest{TaskType: model.TaskWorkflow, Status: model.StatusCompleted, Result: model.ResultSuccess,
		StartedAt: &start, CompletedAt: &end}
	_ = m.Record(workflow.Run{Template: tmpl, Workspace: "main", Root: root})

	mfs, _ := reg.Gather()
	enc := expfmt.NewEncoder(os.Stdout, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if mf.GetName() == "kiln_workflow_runs_total" {
			_ = enc.Encode(mf)
		}
	}
	// Output:
	// # HELP kiln_workflow_runs_total Nightly runs by status.
	// # TYPE kiln_workflow_runs_total counter
	// kiln_workflow_runs_total{status="Succeeded",template="nightly",workspace="main"} 1
}
