package openmetrics

import (
	dto "github.com/prometheus/client_model/go"
)

func init() { register("workflow_templates", workflowTemplates) }

// workflowTemplates counts workflow templates by the workflow they start
// (task_name) and scope; template names stay private.
func workflowTemplates(b *build) (*dto.MetricFamily, error) {
	return totalsGauge(b, "workflow_templates", "Number of workflow templates, by task_name (the workflow they start) and scope.",
		"task_name", labelScope)
}
