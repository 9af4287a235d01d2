package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// ServerEnv is what a Server task gets: the server's own store, used as
// kiln itself (a nil viewer) but always within the request's workspace.
type ServerEnv struct {
	Store  store.Store
	Logger *slog.Logger
}

// AddToCollectionData is the data of an add-to-collection request: put an
// artifact of the request's workspace into a collection of that workspace.
type AddToCollectionData struct {
	Collection int64 `json:"collection"`
	Artifact   int64 `json:"artifact"`
	// Name of the item; default "artifact-<id>".
	Name string `json:"name"`
	// Data of the item; default {}.
	Data json.RawMessage `json:"data,omitempty"`
}

func parseAddToCollection(data json.RawMessage) (*AddToCollectionData, error) {
	var d AddToCollectionData
	if err := strictDecode(data, &d, "collection", "artifact", "name", "data"); err != nil {
		return nil, err
	}
	if d.Collection <= 0 || d.Artifact <= 0 {
		return nil, dataErr("add-to-collection needs a collection id and an artifact id")
	}
	if d.Name == "" {
		d.Name = fmt.Sprintf("artifact-%d", d.Artifact)
	}
	return &d, nil
}

// RunServer runs a Server task in the server process.
func RunServer(ctx context.Context, wr *model.WorkRequest, env *ServerEnv) Outcome {
	start := time.Now()
	var out Outcome
	switch wr.TaskName {
	case AddToCollection:
		out = addToCollection(ctx, wr, env)
	default:
		out = errorOutcome("the server does not know the task %q", wr.TaskName)
	}
	out.Statistics.Duration = time.Since(start).Seconds()
	return out
}

// addToCollection checks that both objects belong to the request's
// workspace — the request runs with kiln's rights, so it must not reach
// into workspaces its creator could not — and adds the item. A request
// that is retried after the item was added succeeds without adding it twice.
func addToCollection(ctx context.Context, wr *model.WorkRequest, env *ServerEnv) Outcome {
	d, err := parseAddToCollection(wr.Data)
	if err != nil {
		return errorOutcome("%v", err)
	}
	coll, err := env.Store.Collections().Get(ctx, d.Collection, nil)
	if err != nil || coll.WorkspaceID != wr.WorkspaceID {
		return failure("collection %d does not exist in the request's workspace", d.Collection)
	}
	art, err := env.Store.Artifacts().Get(ctx, d.Artifact, nil)
	if err != nil || art.WorkspaceID != wr.WorkspaceID {
		return failure("artifact %d does not exist in the request's workspace", d.Artifact)
	}
	item := &model.CollectionItem{CollectionID: coll.ID, Name: d.Name, Category: art.Category, ArtifactID: &art.ID, Data: d.Data}
	if err := env.Store.AddCollectionItem(ctx, item, nil); err != nil {
		var fe *store.FieldError
		if errors.As(err, &fe) && fe.Kind == store.Conflict && fe.Field == "name" {
			if same, _ := itemHolds(ctx, env.Store, coll.ID, d.Name, art.ID); same {
				out := Outcome{Result: model.ResultSuccess}
				out.set("note", "the collection already held this artifact under that name")
				return out
			}
		}
		if errors.As(err, &fe) {
			return failure("%v", err)
		}
		return errorOutcome("%v", err)
	}
	out := Outcome{Result: model.ResultSuccess}
	out.set("collection_item", item.ID)
	return out
}

func itemHolds(ctx context.Context, st store.Store, collection int64, name string, artifact int64) (bool, error) {
	q := store.Query{Limit: store.MaxPageSize}
	for {
		items, err := st.ListCollectionItems(ctx, collection, q)
		if err != nil || len(items) == 0 {
			return false, err
		}
		for _, it := range items {
			if it.Name == name {
				return it.ArtifactID != nil && *it.ArtifactID == artifact, nil
			}
		}
		q.After = items[len(items)-1].ID
	}
}

func failure(format string, args ...any) Outcome {
	o := Outcome{Result: model.ResultFailure}
	o.set("error", fmt.Sprintf(format, args...))
	return o
}
