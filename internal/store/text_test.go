package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestNULRefusedAlike: the store is the last line for text that did not
// come through the API's decoder (runner messages, server tasks, seeds):
// a NUL character in a text or JSON column is a FieldError naming the
// field on both databases, where SQLite would store it and PostgreSQL
// fail, and nothing is written.
func TestNULRefusedAlike(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		s := f.s
		fieldError(t, s.Scopes().Create(ctx, &model.Scope{Name: "x", Label: "a\x00b"}), "label", store.Invalid)
		sc := &model.Scope{Name: "y"}
		must(t, s.Scopes().Create(ctx, sc))
		_, err := s.Scopes().Update(ctx, sc.ID, nil, func(o *model.Scope) error { o.Label = "\x00"; return nil })
		fieldError(t, err, "label", store.Invalid)
		fieldError(t, s.Identities().Create(ctx, &model.Identity{UserID: f.admin, Issuer: "i\x00", Subject: "s"}), "issuer", store.Invalid)
		fieldError(t, s.Assets().Create(ctx, &model.Asset{Category: "test:x", WorkspaceID: f.ws.ID,
			Data: json.RawMessage(`{"k": ["a\u0000"]}`)}), "data.k[0]", store.Invalid)
		_, err = s.CreateToken(ctx, model.Token{UserID: &f.admin, Enabled: true, Comment: "a\x00"})
		fieldError(t, err, "comment", store.Invalid)
		err = s.SubmitWorkRequest(ctx, &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws.ID,
			Data: json.RawMessage(`{"host_architecture": "amd64", "x": "\u0000"}`), CreatedBy: &f.admin})
		fieldError(t, err, "task_data.x", store.Invalid)
		_, _, err = s.ConnectWorker(ctx, f.amd64.ID, model.WorkerMetadata{Architectures: []string{"amd\x0064"}})
		fieldError(t, err, `metadata["system:architectures"][0]`, store.Invalid)

		// a runner's result with a NUL in its output
		wr := f.worker(t, "amd64")
		claimed, err := s.ClaimWorkRequest(ctx, f.amd64.ID)
		if err != nil || claimed == nil || claimed.ID != wr.ID {
			t.Fatalf("claim: %v %+v", err, claimed)
		}
		_, err = s.CompleteWorkRequest(ctx, wr.ID, f.amd64.ID, store.Completion{Result: model.ResultSuccess,
			Output: json.RawMessage(`{"error": "a\u0000b"}`)})
		fieldError(t, err, "output.error", store.Invalid)
		got, err := s.WorkRequests().Get(ctx, wr.ID, nil)
		if err != nil || got.Status != model.StatusRunning {
			t.Fatalf("a refused result changed the request: %v %+v", err, got)
		}

		// lookups with a NUL find nothing on both databases, instead of an
		// error on one
		if _, err := s.Scopes().Lookup(ctx, "a\x00b", nil); err == nil {
			t.Fatal("a lookup by a name with NUL found something")
		} else if !isNotFoundOrField(err) {
			t.Fatalf("a lookup by a name with NUL failed: %v", err)
		}
		list, err := s.Scopes().List(ctx, store.Query{Filter: map[string]string{"name": "a\x00"}})
		if err == nil && len(list) != 0 {
			t.Fatalf("a filter with NUL matched %v", list)
		}
		if err != nil && !isNotFoundOrField(err) {
			t.Fatalf("a filter with NUL failed: %v", err)
		}
	})
}

func isNotFoundOrField(err error) bool {
	var fe *store.FieldError
	return errors.Is(err, store.ErrNotFound) || errors.As(err, &fe)
}
