package tasks_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/testdb"
)

func TestAddToCollection(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, testdb.SQLite(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sc := &model.Scope{Name: "s"}
	must(t, st.Scopes().Create(ctx, sc))
	ws := &model.Workspace{Name: "w", ScopeID: sc.ID, Public: true}
	other := &model.Workspace{Name: "o", ScopeID: sc.ID, Public: true}
	must(t, st.Workspaces().Create(ctx, ws))
	must(t, st.Workspaces().Create(ctx, other))
	coll := &model.Collection{Name: "suite", Category: "debian:suite", WorkspaceID: ws.ID}
	must(t, st.Collections().Create(ctx, coll))
	art := &model.Artifact{Category: "debian:binary-package", WorkspaceID: ws.ID}
	must(t, st.Artifacts().Create(ctx, art))
	foreign := &model.Artifact{Category: "x", WorkspaceID: other.ID}
	must(t, st.Artifacts().Create(ctx, foreign))

	env := &tasks.ServerEnv{Store: st}
	wr := func(artifact int64) *model.WorkRequest {
		return &model.WorkRequest{ID: 1, TaskType: model.TaskServer, TaskName: "add-to-collection", WorkspaceID: ws.ID,
			Data: []byte(fmt.Sprintf(`{"collection": %d, "artifact": %d}`, coll.ID, artifact))}
	}
	out := tasks.RunServer(ctx, wr(art.ID), env)
	if out.Result != model.ResultSuccess {
		t.Fatalf("%+v", out)
	}
	// a retried request finds its item and succeeds without a duplicate
	if out = tasks.RunServer(ctx, wr(art.ID), env); out.Result != model.ResultSuccess {
		t.Fatalf("retry: %+v", out)
	}
	c, _ := st.Collections().Get(ctx, coll.ID, nil)
	if c.ItemCount != 1 {
		t.Fatalf("item count %d", c.ItemCount)
	}
	if out = tasks.RunServer(ctx, wr(foreign.ID), env); out.Result != model.ResultFailure ||
		!strings.Contains(out.Output["error"].(string), "workspace") {
		t.Fatalf("artifact of another workspace: %+v", out)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
