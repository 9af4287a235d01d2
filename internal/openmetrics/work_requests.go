package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("work_requests", workRequests) }

// workRequests counts work requests by task type, task name, scope and
// status. Only Worker tasks carry host_architecture and backend, the one
// piece of task data that is public (it says which workers can run them);
// the label is dropped for any other task type even if a row carried it.
func workRequests(s *store.Snapshot) (*dto.MetricFamily, error) {
	g := newGauges()
	for _, t := range rows(s, "work_requests") {
		l, ok, err := mapped(s, t, "task_type", "task_name", labelScope, "status", "host_architecture", "backend")
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if l["task_type"] != string(model.TaskWorker) {
			delete(l, "host_architecture")
			delete(l, "backend")
		}
		g.add(l, float64(t.Value))
	}
	return g.family("work_requests",
		"Number of work requests, by task_type, task_name, scope and status; "+
			"Worker tasks also by host_architecture and backend from their task data."), nil
}
