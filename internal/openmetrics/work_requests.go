package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/model"
)

func init() { register("work_requests", workRequests) }

// workRequests counts work requests by task type, task name, scope and
// status. Only Worker tasks carry host_architecture and backend, the one
// piece of task data that is public (it says which workers can run them);
// the label is dropped for any other task type even if a row carried it.
func workRequests(b *build) (*dto.MetricFamily, error) {
	g := b.gauges("work_requests", "task_type", "task_name", labelScope, "status", "host_architecture", "backend")
	workerOnly := func() {
		if g.l.get("task_type") != string(model.TaskWorker) {
			g.l.drop("host_architecture")
			g.l.drop("backend")
		}
	}
	for _, t := range b.rows("work_requests") {
		s, ok, err := g.seriesOf(t, workerOnly)
		if err != nil {
			return nil, err
		}
		if ok {
			g.addTo(s, float64(t.Value))
		}
	}
	return g.family("Number of work requests, by task_type, task_name, scope and status; " +
		"Worker tasks also by host_architecture and backend from their task data.")
}
