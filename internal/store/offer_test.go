package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestClaimAgreesWithOffer holds ClaimWorkRequest's SQL and model.Offer.Runs
// (what `kiln work submit --wait` uses to say at once that nothing can run
// a request) to the same answer for every worker of a small farm and every
// kind of request: one request pending at a time, offered to each worker.
func TestClaimAgreesWithOffer(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		both := &model.Worker{Name: "amd64-unshare", WorkerType: model.WorkerExternal, Enabled: true}
		must(t, f.s.Workers().Create(ctx, both))
		both, _, err := f.s.ConnectWorker(ctx, both.ID, model.WorkerMetadata{
			Architectures: []string{"amd64"}, HostArchitecture: "amd64", Backends: []string{"host", "unshare"}})
		must(t, err)
		workers := []*model.Worker{f.amd64, f.arm64, f.server, both}

		type spec struct {
			tt   model.TaskType
			name string
			data map[string]any
		}
		specs := []spec{{model.TaskServer, "add-to-collection", map[string]any{}}}
		for _, arch := range []string{"amd64", "i386", "arm64", "armhf"} {
			for _, backend := range []string{"", "auto", "host", "unshare"} {
				data := map[string]any{"host_architecture": arch}
				if backend != "" {
					data["backend"] = backend
				}
				specs = append(specs, spec{model.TaskWorker, "noop", data})
			}
		}
		checked := 0
		for _, sp := range specs {
			for _, w := range workers {
				raw, _ := json.Marshal(sp.data)
				wr := &model.WorkRequest{TaskType: sp.tt, TaskName: sp.name, WorkspaceID: f.ws.ID, Data: raw,
					CreatedBy: &f.admin, MaxRetries: 1}
				must(t, f.s.SubmitWorkRequest(ctx, wr))
				arch, _ := sp.data["host_architecture"].(string)
				backend, _ := sp.data["backend"].(string)
				want := w.Offer().Runs(sp.tt, arch, backend)
				got, err := f.s.ClaimWorkRequest(ctx, w.ID)
				what := fmt.Sprintf("%s %s %v offered to %s", sp.tt, sp.name, sp.data, w.Name)
				switch {
				case err == nil && got.ID != wr.ID:
					t.Fatalf("%s: claimed %d, a request of an earlier case", what, got.ID)
				case err == nil:
					if !want {
						t.Errorf("%s: claimed, but Offer.Runs says it cannot run it", what)
					}
					_, err = f.s.CompleteWorkRequest(ctx, wr.ID, w.ID, store.Completion{Result: model.ResultSuccess})
					must(t, err)
				case errors.Is(err, store.ErrNoWork):
					if want {
						t.Errorf("%s: not claimed, but Offer.Runs says it can run it", what)
					}
					_, err = f.s.AbortWorkRequest(ctx, wr.ID, "next case", nil)
					must(t, err)
				default:
					t.Fatalf("%s: %v", what, err)
				}
				checked++
			}
		}
		if checked != len(specs)*len(workers) {
			t.Fatalf("checked %d cases", checked)
		}
	})
}
