package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("workflow_templates", workflowTemplates) }

// workflowTemplates counts workflow templates by the workflow they start
// (task_name) and scope; template names stay private.
func workflowTemplates(s *store.Snapshot) (*dto.MetricFamily, error) {
	return totalsGauge(s, "workflow_templates", "Number of workflow templates, by task_name (the workflow they start) and scope.",
		"task_name", labelScope)
}
