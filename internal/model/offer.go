package model

import "slices"

// BackendAuto is the backend a Worker task asks for when any will do; it
// is also what a task without a backend asks for.
const BackendAuto = "auto"

// Offer is one way the farm can run work: a connected worker, or a worker
// pool that can start one (WorkerPool.Offer). The scheduler hands work out
// with store.ClaimWorkRequest; Runs states its matching rule in Go, so that
// a client can tell at once when nothing on the farm could take a request
// (a --wait that would otherwise wait forever), and the autoscaler which
// pool's instances would take it. The store's tests hold the two to the
// same answers.
type Offer struct {
	// Name says where the offer comes from, for people: a worker's name,
	// or "worker pool NAME".
	Name string
	// WorkerType is the kind of tasks the offer runs (WorkerTypeFor).
	WorkerType WorkerType
	// Architectures and Backends bound the Worker tasks an external
	// worker takes; other worker types have none.
	Architectures []string
	Backends      []string
}

// Offer is what an enabled worker offers while it is connected.
func (w *Worker) Offer() Offer {
	return Offer{Name: w.Name, WorkerType: w.WorkerType, Architectures: w.Metadata.Architectures, Backends: w.Metadata.Backends}
}

// Runs reports whether the offer can take a request of task type tt; for
// Worker tasks, hostArch must be one of its architectures and backend
// ("" meaning BackendAuto) BackendAuto or one of its backends. Task types
// no worker runs (Workflow, Wait, Internal) are nobody's offer.
func (o Offer) Runs(tt TaskType, hostArch, backend string) bool {
	want := WorkerTypeFor(tt)
	if want == "" || want != o.WorkerType {
		return false
	}
	if o.WorkerType != WorkerExternal {
		return true
	}
	if backend == "" {
		backend = BackendAuto
	}
	return slices.Contains(o.Architectures, hostArch) && (backend == BackendAuto || slices.Contains(o.Backends, backend))
}
