package openmetrics

import (
	"encoding/json"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// ServiceStatus is the body of GET /api/1.0/service-status/: the queue and
// worker figures scripts ask for most, as JSON. Every number is a sum over
// series of the work_requests, workers and external_workers_by_architecture
// families of the same snapshot,
// so it always agrees with what the open-metrics endpoint reports at the
// same time; like the metrics, it carries no private data.
type ServiceStatus struct {
	// SnapshotAt is when the figures were read from the database.
	SnapshotAt time.Time `json:"snapshot_at"`
	// Tasks holds pending and running work requests by task type; every
	// task type is listed, with zeros when it has none.
	Tasks map[string]TaskCounts `json:"tasks"`
	// WorkerTasksByArchitecture holds pending and running Worker tasks by
	// the host_architecture of their task data, for every architecture
	// that has or had Worker tasks.
	WorkerTasksByArchitecture map[string]TaskCounts `json:"worker_tasks_by_architecture"`
	// Workers holds workers by worker type; every type is listed.
	Workers map[string]WorkerCounts `json:"workers"`
	// WorkersByArchitecture holds external workers by each architecture
	// they support (a worker counts once under each of its
	// architectures), as the external_workers_by_architecture family
	// reports them.
	WorkersByArchitecture map[string]WorkerCounts `json:"workers_by_architecture"`
	// WorkersByHostArchitecture holds external workers by their host
	// architecture.
	WorkersByHostArchitecture map[string]WorkerCounts `json:"workers_by_host_architecture"`
}

// TaskCounts are the work requests waiting for a worker and being run.
type TaskCounts struct {
	Pending int64 `json:"pending"`
	Running int64 `json:"running"`
}

// WorkerCounts describe a set of workers. Registered counts all of them;
// Connected those with a live connection; Busy those holding at least one
// running work request, whatever their capacity (a worker that just lost
// its connection may still hold some until the heartbeat timeout); Idle
// those connected and not busy.
type WorkerCounts struct {
	Registered int64 `json:"registered"`
	Connected  int64 `json:"connected"`
	Idle       int64 `json:"idle"`
	Busy       int64 `json:"busy"`
}

// StatusOf computes the service status of a snapshot from the families
// Gather builds from it, for callers such as reports that hold a snapshot
// rather than an HTTP request. A failing family is an error here: the
// figures would be incomplete.
func StatusOf(snap *store.Snapshot) (*ServiceStatus, error) {
	fams, err := Gather(snap)
	if err != nil {
		return nil, err
	}
	return statusOf(snap.Taken, fams), nil
}

// StatusOfFamilies computes the service status from families Gather
// built from a snapshot taken at taken, for callers that also use the
// families themselves (reports), so that both come from one build.
func StatusOfFamilies(taken time.Time, fams []*dto.MetricFamily) *ServiceStatus {
	return statusOf(taken, fams)
}

// statusOf sums the series of fams.
func statusOf(taken time.Time, fams []*dto.MetricFamily) *ServiceStatus {
	st := &ServiceStatus{
		SnapshotAt: taken.UTC(), Tasks: map[string]TaskCounts{}, WorkerTasksByArchitecture: map[string]TaskCounts{},
		Workers: map[string]WorkerCounts{}, WorkersByArchitecture: map[string]WorkerCounts{},
		WorkersByHostArchitecture: map[string]WorkerCounts{},
	}
	for _, tt := range model.TaskTypes {
		st.Tasks[string(tt)] = TaskCounts{}
	}
	for _, wt := range []model.WorkerType{model.WorkerExternal, model.WorkerServer, model.WorkerSigning} {
		st.Workers[string(wt)] = WorkerCounts{}
	}
	for _, mf := range fams {
		switch mf.GetName() {
		case "work_requests":
			for _, m := range mf.Metric {
				l := labelMap(m)
				n := int64(m.GetGauge().GetValue())
				addTasks(st.Tasks, l["task_type"], l["status"], n)
				if l["task_type"] == string(model.TaskWorker) {
					addTasks(st.WorkerTasksByArchitecture, l["host_architecture"], l["status"], n)
				}
			}
		case "workers":
			for _, m := range mf.Metric {
				l := labelMap(m)
				n := int64(m.GetGauge().GetValue())
				addWorkers(st.Workers, l["worker_type"], l, n)
				if l["worker_type"] == string(model.WorkerExternal) {
					addWorkers(st.WorkersByHostArchitecture, l["host_architecture"], l, n)
				}
			}
		case "external_workers_by_architecture":
			for _, m := range mf.Metric {
				l := labelMap(m)
				addWorkers(st.WorkersByArchitecture, l["architecture"], l, int64(m.GetGauge().GetValue()))
			}
		}
	}
	return st
}

func addTasks(m map[string]TaskCounts, k, status string, n int64) {
	c := m[k]
	switch model.Status(status) {
	case model.StatusPending:
		c.Pending += n
	case model.StatusRunning:
		c.Running += n
	}
	m[k] = c
}

func addWorkers(m map[string]WorkerCounts, k string, l map[string]string, n int64) {
	c := m[k]
	c.Registered += n
	if l["connected"] == "1" {
		c.Connected += n
		if l["busy"] != "1" {
			c.Idle += n
		}
	}
	if l["busy"] == "1" {
		c.Busy += n
	}
	m[k] = c
}

func labelMap(m *dto.Metric) map[string]string {
	l := make(map[string]string, len(m.Label))
	for _, lp := range m.Label {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

// ServiceStatus returns the handler of GET /api/1.0/service-status/. It
// shares the endpoint's cache, scope restriction and status codes; with a
// scope restriction, task figures count only that scope (workers have no
// scope).
func (e *Endpoint) ServiceStatus() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc, res, ok := e.prepare(w, r)
		if !ok {
			return
		}
		resp := sc.response(variant{format: "application/json", restriction: res}, func() []byte {
			body, err := json.MarshalIndent(statusOf(sc.taken, filterScope(sc.families, res)), "", "  ")
			if err != nil {
				// only plain numbers, strings and maps of them: cannot happen
				panic("service-status: " + err.Error())
			}
			return append(body, '\n')
		})
		e.write(w, r, resp)
	})
}
