package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("workspaces", workspaces) }

// workspaces counts workspaces by visibility, expiry and scope. private is
// 1 for workspaces that are NOT public (the reference implementation got
// this backwards).
func workspaces(s *store.Snapshot) (*dto.MetricFamily, error) {
	return totalsGauge(s, "workspaces",
		"Number of workspaces, by private (1 when the workspace is not public), expires (1 when an expiration delay is set) and scope.",
		"private", "expires", labelScope)
}
