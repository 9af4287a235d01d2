package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("task_execution_times", taskExecutionTimes) }

// taskExecutionTimes is the distribution of the run time of completed work
// requests, by task type, task name and scope. The store keeps
// microseconds (exact integer sums); they are exposed in seconds.
func taskExecutionTimes(b *build) (*dto.MetricFamily, error) {
	return totalsHistogram(b, "task_execution_times",
		"Run time in seconds of completed work requests, by task_type, task_name and scope.",
		store.TaskExecutionBuckets, 1e6, "task_type", "task_name", labelScope)
}
