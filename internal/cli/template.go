package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/workflow"
)

var templates = &resource{
	singular: "workflow template", plural: "workflow-templates", command: "template", nameKey: "name",
	cols: func(n *names) []column {
		return []column{field("ID", "id"), field("NAME", "name"), field("KIND", "task_name"),
			n.workspaceColumn("WORKSPACE", "workspace"), field("PRIORITY", "priority"),
			computed("PARAMETERS", templateInfo(func(t *workflow.Template) []string { return t.RequiredParameters() })),
			computed("METRICS", templateInfo(metricNames)),
			field("CREATED_AT", "created_at")}
	},
}

// templateInfo is a column computed from the stored template.
func templateInfo(f func(*workflow.Template) []string) func(object) string {
	return func(o object) string {
		b, _ := json.Marshal(o)
		var m model.WorkflowTemplate
		if json.Unmarshal(b, &m) != nil {
			return "?"
		}
		t, err := workflow.FromModel(&m)
		if err != nil {
			return "?"
		}
		if list := f(t); len(list) > 0 {
			return strings.Join(list, ",")
		}
		return "-"
	}
}

// metricNames lists the metrics a template declares, as emitted.
func metricNames(t *workflow.Template) []string {
	var out []string
	seen := map[string]bool{}
	add := func(ms []workflow.Metric) {
		for _, m := range ms {
			if !seen[m.Name] {
				seen[m.Name] = true
				out = append(out, workflow.MetricPrefix+m.Name)
			}
		}
	}
	add(t.Metrics)
	for _, st := range t.Steps {
		add(st.Metrics)
	}
	for _, st := range []*workflow.Step{t.Task, t.Then} {
		if st != nil {
			add(st.Metrics)
		}
	}
	return out
}

// readTemplate reads and checks a template file ("-" for stdin) before
// anything is sent, so that mistakes are reported against the file.
func readTemplate(cmd *cobra.Command, file string) (*workflow.Template, error) {
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(cmd.InOrStdin())
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, usageError{fmt.Errorf("-f: %w", err)}
	}
	t, err := workflow.Parse(file, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return t, nil
}

// templateBody is the template as the API takes it, the workspace given
// as the API resolves it.
func templateBody(t *workflow.Template, workspace any) (map[string]any, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, err
	}
	delete(body, "workspace")
	if workspace != nil {
		body["workspace"] = workspace
	}
	return body, nil
}

// newTemplateCommand is `kiln template`: workflow templates, written in
// YAML or JSON, from which `kiln workflow start` starts workflows.
func newTemplateCommand() *cobra.Command {
	cmd, o := group("template", "Manage workflow templates")

	var file, workspace string
	create := &cobra.Command{
		Use:   "create -f FILE [--workspace WORKSPACE]",
		Short: "Create a workflow template from a YAML or JSON file (contributors and owners of the workspace)",
		Long: `Create a workflow template from a file (.json is JSON, anything else YAML;
"-" reads stdin). The file is checked here first, then by the server; errors
name the field, e.g. metrics[1].labels[0].key.

  name: build-all
  workspace: debian/main
  kind: matrix                     # or sequence, with steps: [...]
  matrix: {host_architecture: [amd64, i386, arm64]}
  task:
    name: build
    task_type: Worker
    task_name: command
    task_data: {script: "make VERSION={{params.version}}"}
  then: {name: check, task_type: Worker, task_name: noop, task_data: {host_architecture: amd64}}
  metrics:
    - name: runs_total
      help: Runs by status.
      labels: [{key: status, value: "{{workflow.status}}"}]
      counter: {}

--workspace overrides the file's workspace.`,
		Args: cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			t, err := readTemplate(s.cmd, file)
			if err != nil {
				return err
			}
			ref := t.Workspace
			if workspace != "" {
				ref = workspace
			}
			if ref == "" {
				return usageError{fmt.Errorf("the template names no workspace: add workspace: to the file or give --workspace")}
			}
			ws, err := workspaceRef(s, ref)
			if err != nil {
				return err
			}
			body, err := templateBody(t, ws)
			if err != nil {
				return err
			}
			_, err = templates.create(s, body)
			return err
		}),
	}
	create.Flags().StringVarP(&file, "file", "f", "", "the template file, YAML or JSON (required)")
	create.Flags().StringVar(&workspace, "workspace", "", "workspace, by id, scope/name or a unique name")
	_ = create.MarkFlagRequired("file")

	var updateFile string
	update := &cobra.Command{
		Use:   "update TEMPLATE -f FILE",
		Short: "Replace a workflow template's definition with a file's (its workspace stays)",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := templates.byName(s, args[0])
			if err != nil {
				return err
			}
			t, err := readTemplate(s.cmd, updateFile)
			if err != nil {
				return err
			}
			body, err := templateBody(t, nil)
			if err != nil {
				return err
			}
			_, err = templates.update(s, id, body)
			return err
		}),
	}
	update.Flags().StringVarP(&updateFile, "file", "f", "", "the template file, YAML or JSON (required)")
	_ = update.MarkFlagRequired("file")

	list := templates.workspaceListCommand(o, listFilter{"kind", "task_name", "only templates of this kind: sequence or matrix"})

	var check string
	validate := &cobra.Command{
		Use:   "check -f FILE",
		Short: "Check a template file without saving it (no server needed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := readTemplate(cmd, check)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s template %q is valid", check, t.Kind, t.Name)
			if ps := t.RequiredParameters(); len(ps) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "; workflows need --param %s", strings.Join(ps, "=… --param ")+"=…")
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	validate.Flags().StringVarP(&check, "file", "f", "", "the template file, YAML or JSON (required)")
	_ = validate.MarkFlagRequired("file")

	schema := &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of workflow templates, for editors (no server needed)",
		Long: `Print the JSON Schema (draft 2020-12) that templates are checked against.
Editors validate and complete templates with it: save it, then start a YAML
file with "# yaml-language-server: $schema=workflow-template.schema.json", or
give a JSON file "$schema": "workflow-template.schema.json". The server
answers it too, at /api/1.0/workflow-templates/schema/.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(workflow.Schema())
			return err
		},
	}

	cmd.AddCommand(create, update, list, validate, schema,
		templates.showCommand(o, templates.byName), templates.deleteCommand(o, templates.byName))
	return cmd
}
