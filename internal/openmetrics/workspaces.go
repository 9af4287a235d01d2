package openmetrics

import (
	dto "github.com/prometheus/client_model/go"
)

func init() { register("workspaces", workspaces) }

// workspaces counts workspaces by visibility, expiry and scope. private is
// 1 for workspaces that are NOT public (the reference implementation got
// this backwards).
func workspaces(b *build) (*dto.MetricFamily, error) {
	return totalsGauge(b, "workspaces",
		"Number of workspaces, by private (1 when the workspace is not public), expires (1 when an expiration delay is set) and scope.",
		"private", "expires", labelScope)
}
