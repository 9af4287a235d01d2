package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

var workflows = &resource{
	singular: "workflow", plural: "workflows",
	cols: func(n *names) []column {
		return []column{field("ID", "id"),
			computed("TEMPLATE", func(o object) string {
				data, _ := o["task_data"].(map[string]any)
				return format(data["template"])
			}),
			field("KIND", "task_name"), n.workspaceColumn("WORKSPACE", "workspace"),
			field("STATUS", "status"), field("RESULT", "result"),
			computed("STEPS", func(o object) string {
				if s, ok := o["steps"].(string); ok {
					return s // set by printWorkflow
				}
				kids, _ := o["children"].([]any)
				done := 0
				for _, k := range kids {
					if m, ok := k.(map[string]any); ok && (m["status"] == "completed" || m["status"] == "aborted") {
						done++
					}
				}
				return fmt.Sprintf("%d/%d", done, len(kids))
			}),
			n.column("CREATED_BY", "created_by", "users", "username"), field("CREATED_AT", "created_at")}
	},
}

// stepColumns are the columns of a workflow's children.
func stepColumns(n *names) []column {
	return []column{field("ID", "id"), field("STEP", "step_name"), field("TYPE", "task_type"), field("TASK", "task_name"),
		field("STATUS", "status"), field("RESULT", "result"), n.column("WORKER", "worker", "workers", "name"),
		field("RETRIES", "retries")}
}

// printWorkflow shows a workflow: the root's fields, then its steps.
func printWorkflow(s *session, raw json.RawMessage) error {
	if s.p.json {
		return s.p.raw(raw)
	}
	o, err := decodeObject(raw)
	if err != nil {
		return err
	}
	kids, _ := o["children"].([]any)
	for _, c := range workflows.cols(s.n) {
		if c.header == "STEPS" {
			o["steps"] = c.value(o)
		}
	}
	delete(o, "children")
	delete(o, "dependencies")
	if err := s.p.record(workflows.cols(s.n), o); err != nil {
		return err
	}
	objs := make([]object, 0, len(kids))
	for _, k := range kids {
		if m, ok := k.(map[string]any); ok {
			objs = append(objs, m)
		}
	}
	fmt.Fprintln(s.p.out)
	return s.p.table(stepColumns(s.n), objs)
}

func (s *session) getWorkflow(id string) (json.RawMessage, object, error) {
	var raw json.RawMessage
	if err := s.c.Do(s.ctx, http.MethodGet, workflows.path(id), nil, &raw); err != nil {
		return nil, nil, err
	}
	o, err := decodeObject(raw)
	return raw, o, err
}

// newWorkflowCommand is `kiln workflow`: workflows started from
// templates, a root work request with the children that do the work.
func newWorkflowCommand() *cobra.Command {
	cmd, o := group("workflow", "Start, list, show and abort workflows")

	var (
		params     []string
		workspace  string
		wait       bool
		waitAnyway bool
	)
	start := &cobra.Command{
		Use:   "start TEMPLATE [--param NAME=VALUE]...",
		Short: "Start a workflow from a template (contributors and owners of its workspace)",
		Long: `Start a workflow from a template, by id or name, and print it. Every
{{params.NAME}} the template's task data uses needs a --param NAME=VALUE
unless the template fixes it; 'kiln template show' lists them.

  kiln workflow start build-all --param version=1.2.3 --wait

--wait waits until the workflow has finished and exits non-zero unless it
succeeded. When no connected worker can run one of its steps (a matrix over an
architecture no runner has), it says so at once on stderr, naming what is
connected, gives a runner a few seconds to connect, then stops waiting (the
workflow keeps running) unless --wait-for-runner is given.`,
		Args: cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			values := map[string]string{}
			for _, kv := range params {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageError{fmt.Errorf("--param %q: want NAME=VALUE", kv)}
				}
				if _, dup := values[k]; dup {
					return usageError{fmt.Errorf("--param %s is given twice", k)}
				}
				values[k] = v
			}
			body := map[string]any{"template": refValue(args[0]), "parameters": values}
			if workspace != "" {
				ws, err := workspaceRef(s, workspace)
				if err != nil {
					return err
				}
				body["workspace"] = ws
			}
			var raw json.RawMessage
			if err := s.c.Do(s.ctx, http.MethodPost, workflows.path(), body, &raw); err != nil {
				return err
			}
			o, err := decodeObject(raw)
			if err != nil {
				return err
			}
			id := format(o["id"])
			if !wait {
				s.p.note("workflow %s started; follow it with: kiln workflow show %s", id, id)
				return printWorkflow(s, raw)
			}
			s.p.note("workflow %s started; waiting for it to finish", id)
			var last object
			rc := &runnerCheck{anyway: waitAnyway, abort: "kiln workflow abort " + id}
			err = waitFor(s.ctx, 500*time.Millisecond, func() (bool, error) {
				r, o, err := s.getWorkflow(id)
				if err != nil {
					return false, err
				}
				raw, last = r, o
				kids, _ := o["children"].([]any)
				if err := rc.poll(s, decodeObjects(kids)); err != nil {
					return false, err
				}
				st := format(o["status"])
				return st == "completed" || st == "aborted", nil
			})
			if err != nil {
				return err
			}
			if err := printWorkflow(s, raw); err != nil {
				return err
			}
			if format(last["status"]) != "completed" || format(last["result"]) != "success" {
				return fmt.Errorf("workflow %s ended %s/%s", id, format(last["status"]), format(last["result"]))
			}
			return nil
		}),
	}
	sf := start.Flags()
	sf.StringArrayVar(&params, "param", nil, "NAME=VALUE for {{params.NAME}} (repeatable)")
	sf.StringVar(&workspace, "workspace", "", "the template's workspace, when several have one of that name")
	sf.BoolVar(&wait, "wait", false, "wait until it has finished; exit non-zero unless it succeeded")
	sf.BoolVar(&waitAnyway, "wait-for-runner", false, "with --wait: keep waiting when no connected worker can run a step, until one connects")

	var status, lworkspace, kind string
	list := &cobra.Command{
		Use:   "list",
		Short: "List workflows",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if status != "" {
				q.Set("status", status)
			}
			if kind != "" {
				q.Set("task_name", kind)
			}
			if lworkspace != "" {
				ws, err := workspaceRef(s, lworkspace)
				if err != nil {
					return err
				}
				q.Set("workspace", format(ws))
			}
			return workflows.list(s, q)
		}),
	}
	lf := list.Flags()
	lf.StringVar(&status, "status", "", "only workflows in this status: running, completed or aborted")
	lf.StringVar(&lworkspace, "workspace", "", "only workflows of this workspace")
	lf.StringVar(&kind, "kind", "", "only workflows of this kind: sequence or matrix")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a workflow and its steps",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := workflows.byName(s, args[0])
			if err != nil {
				return err
			}
			raw, _, err := s.getWorkflow(id)
			if err != nil {
				return err
			}
			return printWorkflow(s, raw)
		}),
	}

	var reason string
	abort := &cobra.Command{
		Use:   "abort ID",
		Short: "Abort a workflow and every step that has not finished",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := workflows.byName(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{}
			if reason != "" {
				body["reason"] = reason
			}
			var raw json.RawMessage
			if err := s.c.Do(s.ctx, http.MethodPost, workflows.path(id, "abort"), body, &raw); err != nil {
				return err
			}
			s.p.note("workflow %s aborted", id)
			return printWorkflow(s, raw)
		}),
	}
	abort.Flags().StringVar(&reason, "reason", "", "why, for the record")

	cmd.AddCommand(start, list, show, abort)
	return cmd
}
