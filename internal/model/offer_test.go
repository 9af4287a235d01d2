package model

import "testing"

// TestOfferRuns covers what store's TestClaimAgreesWithOffer cannot reach
// through claims: task types no worker runs, and the other worker types.
func TestOfferRuns(t *testing.T) {
	ext := Offer{Name: "b", WorkerType: WorkerExternal, Architectures: []string{"amd64", "i386"}, Backends: []string{"host"}}
	srv := Offer{Name: "s", WorkerType: WorkerServer}
	sign := Offer{Name: "k", WorkerType: WorkerSigning}
	for _, c := range []struct {
		o        Offer
		tt       TaskType
		arch, be string
		want     bool
	}{
		{ext, TaskWorker, "i386", "", true},
		{ext, TaskWorker, "i386", "auto", true},
		{ext, TaskWorker, "amd64", "host", true},
		{ext, TaskWorker, "amd64", "unshare", false},
		{ext, TaskWorker, "arm64", "", false},
		{ext, TaskServer, "", "", false},
		{srv, TaskServer, "", "", true},
		{srv, TaskWorker, "amd64", "", false},
		{sign, TaskSigning, "", "", true},
		{ext, TaskWorkflow, "", "", false},
		{srv, TaskWait, "", "", false},
		{srv, TaskInternal, "", "", false},
	} {
		if got := c.o.Runs(c.tt, c.arch, c.be); got != c.want {
			t.Errorf("%s offer, %s task for %q backend %q: Runs = %v, want %v", c.o.WorkerType, c.tt, c.arch, c.be, got, c.want)
		}
	}
	w := Worker{Name: "b", WorkerType: WorkerExternal, Metadata: WorkerMetadata{Architectures: []string{"arm64"}, Backends: []string{"unshare"}}}
	if o := w.Offer(); !o.Runs(TaskWorker, "arm64", "unshare") || o.Name != "b" {
		t.Errorf("Worker.Offer: %+v", o)
	}
}
