package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testdb"
)

// TestDeletePoolDrainsItsInstances: deleting a pool that has live
// instances answers 202 with the pool marked for deletion (disabled, no
// longer changeable) and lists its instances still; once they are gone,
// it is deleted.
func TestDeletePoolDrainsItsInstances(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		ctx := context.Background()
		p := e.do("POST", "/api/1.0/worker-pools/", adminSecret, `{"name": "cloud", "provider": "process",
			"architectures": ["arm64"], "max_instances": 2}`).want(t, 201).obj(t)
		item := "/api/1.0/worker-pools/" + itoa(id(p)) + "/"
		inst, _, err := e.st.StartPoolInstance(ctx, id(p))
		e.must(err)

		drained := e.do("DELETE", item, adminSecret, nil).want(t, 202).obj(t)
		status := drained["status"].(map[string]any)
		if status["deleting"] != true || drained["enabled"] != false || status["instances"].(map[string]any)["creating"] != float64(1) {
			t.Fatalf("the pool being drained: %v", drained)
		}
		e.do("PATCH", item, adminSecret, `{"max_instances": 3}`).wantProblem(t, 409, "")
		live, _ := e.do("GET", item+"instances/", adminSecret, nil).want(t, 200).list(t)
		if len(live) != 1 || int64(live[0]["id"].(float64)) != inst.ID || live[0]["state"] != "creating" {
			t.Fatalf("instances while draining: %v", live)
		}

		e.must(e.st.StopPoolInstance(ctx, inst.ID, time.Now(), "drain"))
		e.do("DELETE", item, adminSecret, nil).want(t, 204)
		e.do("GET", item, adminSecret, nil).wantProblem(t, 404, "")
		e.do("GET", item+"instances/", adminSecret, nil).wantProblem(t, 404, "")
	})
}
