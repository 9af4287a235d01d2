package workflow_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/workflow"
)

// FuzzParseTemplate feeds workflow templates, as YAML and as JSON, to the
// public parser: it never panics, and what it accepts converts to the
// stored form and back. Seeds: testdata/fuzz/FuzzParseTemplate (the
// fixtures of testdata/good and testdata/bad).
func FuzzParseTemplate(f *testing.F) {
	f.Add([]byte("name: t\nkind: sequence\nsteps:\n  - {name: a, task_type: Wait, task_name: delay}\n"))
	f.Add([]byte(`{"name": "t", "kind": "sequence", "steps": [{"name": "a", "task_type": "Wait", "task_name": "delay"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, name := range []string{"t.yaml", "t.json"} {
			tmpl, err := workflow.Parse(name, data)
			if err != nil {
				continue
			}
			m, err := tmpl.Model()
			if err != nil {
				t.Fatalf("accepted %q, whose stored form fails: %v", data, err)
			}
			if _, err := workflow.FromModel(m); err != nil {
				t.Fatalf("accepted %q, whose stored form does not read back: %v", data, err)
			}
		}
	})
}

// FuzzWhen feeds when-conditions, and the status they are evaluated
// against, through the public entry points: a template declaring a metric
// with the condition is parsed (which validates it), and a finished
// workflow is recorded (which evaluates it). Neither panics. Seeds:
// testdata/fuzz/FuzzWhen.
func FuzzWhen(f *testing.F) {
	for _, s := range [][2]string{{"{{workflow.status}} == Succeeded", "success"}, {"{{workflow.duration}} > 3.5 && !({{workflow.name}} == x)", "failure"},
		{"'a' != \"b\" || {{workflow.status}} <= 2", "error"}, {"((", "success"}, {"{{workflow.status}} ==", "skipped"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, when, result string) {
		doc, _ := json.Marshal(map[string]any{"name": "t", "kind": "sequence",
			"steps":   []any{map[string]any{"name": "a", "task_type": "Wait", "task_name": "delay"}},
			"metrics": []any{map[string]any{"name": "runs_total", "help": "Runs.", "when": when, "counter": map[string]any{"value": "1"}}}})
		tmpl, err := workflow.ParseJSON(doc)
		if err != nil {
			return
		}
		tmpl.ID, tmpl.WorkspaceID = 1, 1
		start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		end := start.Add(90 * time.Second)
		root := &model.WorkRequest{TaskType: model.TaskWorkflow, Status: model.StatusCompleted, Result: model.Result(result),
			StartedAt: &start, CompletedAt: &end}
		m := workflow.NewMetrics(workflow.MetricsOptions{})
		_ = m.Record(workflow.Run{Template: tmpl, Workspace: "w", Root: root})
	})
}
