package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

func TestExpireArtifacts(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
		f.s.SetClock(func() time.Time { return now })
		day := model.Duration(24 * time.Hour)
		short := &model.Workspace{Name: "short", ScopeID: f.ws.ScopeID, Public: true, ExpirationDelay: &day}
		must(t, f.s.Workspaces().Create(ctx, short))
		sha := "aa00000000000000000000000000000000000000000000000000000000000000"
		old := &model.Artifact{Category: "debian:upload", WorkspaceID: short.ID, Files: []model.ArtifactFile{{Path: "a", SHA256: sha, Size: 10}}}
		must(t, f.s.Artifacts().Create(ctx, old))
		fs, err := f.s.DefaultFileStore(ctx)
		must(t, err)
		must(t, f.s.AttachFile(ctx, old.ID, "a", fs.ID, nil))
		kept := &model.Artifact{Category: "debian:upload", WorkspaceID: f.ws.ID} // workspace without delay
		must(t, f.s.Artifacts().Create(ctx, kept))
		inColl := &model.Artifact{Category: "debian:upload", WorkspaceID: short.ID}
		must(t, f.s.Artifacts().Create(ctx, inColl))
		c := &model.Collection{Category: "debian:suite", Name: "sid", WorkspaceID: short.ID}
		must(t, f.s.Collections().Create(ctx, c))
		must(t, f.s.AddCollectionItem(ctx, &model.CollectionItem{CollectionID: c.ID, Name: "x", Category: "debian:package", ArtifactID: &inColl.ID}, nil))

		res, err := f.s.ExpireArtifacts(ctx, 0)
		must(t, err)
		if res.Artifacts != 0 {
			t.Fatalf("expired %d artifacts before their time", res.Artifacts)
		}
		now = now.Add(25 * time.Hour)
		res, err = f.s.ExpireArtifacts(ctx, 0)
		must(t, err)
		if res.Artifacts != 1 || res.Kept != 1 || len(res.Released) != 1 || res.Released[0].SHA256 != sha {
			t.Fatalf("expiry result %+v", res)
		}
		fs, err = f.s.DefaultFileStore(ctx)
		must(t, err)
		if fs.TotalSize != 0 {
			t.Fatalf("file store total_size %d after expiry, want 0", fs.TotalSize)
		}
		if diffs, err := f.s.CheckTotals(ctx); err != nil || len(diffs) > 0 {
			t.Fatal(err, diffs)
		}
	})
}

// TestExpireIncomplete is defect 2 of issue 13: an artifact whose upload
// was cut (its runner or the server killed mid-upload) stayed incomplete
// forever, its finished files counted in the file store's total. Past a
// grace period it is deleted through the ordinary delete path: its
// uploaded content is released and every total follows.
func TestExpireIncomplete(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
		f.s.SetClock(func() time.Time { return now })
		fs, err := f.s.DefaultFileStore(ctx)
		must(t, err)
		sha := func(b byte) string { return strings.Repeat(string("0123456789abcdef"[b]), 64) }
		mk := func(wr *int64, files ...model.ArtifactFile) *model.Artifact {
			a := &model.Artifact{Category: "test:out", WorkspaceID: f.ws.ID, WorkRequestID: wr, Files: files}
			must(t, f.s.Artifacts().Create(ctx, a))
			return a
		}
		// cut after its first file: one complete, one not
		half := mk(nil, model.ArtifactFile{Path: "a", SHA256: sha(1), Size: 100}, model.ArtifactFile{Path: "b", SHA256: sha(2), Size: 400 << 20})
		must(t, f.s.AttachFile(ctx, half.ID, "a", fs.ID, nil))
		complete := mk(nil, model.ArtifactFile{Path: "c", SHA256: sha(3), Size: 10})
		must(t, f.s.AttachFile(ctx, complete.ID, "c", fs.ID, nil))
		empty := mk(nil) // no files: complete
		// still being uploaded by a running request
		wr := f.worker(t, "amd64")
		claimed, err := f.s.ClaimWorkRequest(ctx, f.amd64.ID)
		if err != nil || claimed == nil || claimed.ID != wr.ID {
			t.Fatalf("claim: %v", err)
		}
		uploading := mk(&wr.ID, model.ArtifactFile{Path: "d", SHA256: sha(4), Size: 10})

		now = now.Add(23 * time.Hour)
		recent := mk(nil, model.ArtifactFile{Path: "e", SHA256: sha(5), Size: 10})
		now = now.Add(2 * time.Hour) // half and the others are 25 h old, recent 2 h

		res, err := f.s.ExpireIncomplete(ctx, 24*time.Hour, 0)
		must(t, err)
		if res.Artifacts != 1 || len(res.Released) != 1 || res.Released[0].SHA256 != sha(1) {
			t.Fatalf("result %+v, want the half-uploaded artifact deleted and its uploaded file released", res)
		}
		for _, a := range []*model.Artifact{complete, empty, uploading, recent} {
			if _, err := f.s.Artifacts().Get(ctx, a.ID, nil); err != nil {
				t.Errorf("artifact %d was deleted: %v", a.ID, err)
			}
		}
		if _, err := f.s.Artifacts().Get(ctx, half.ID, nil); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the half-uploaded artifact is still there: %v", err)
		}
		fs, err = f.s.DefaultFileStore(ctx)
		must(t, err)
		if fs.TotalSize != 10 {
			t.Errorf("file store total_size %d, want 10 (the complete artifact's file)", fs.TotalSize)
		}
		if diffs, err := f.s.CheckTotals(ctx); err != nil || len(diffs) > 0 {
			t.Fatal(err, diffs)
		}
		// the dry run lists what a pass would delete
		now = now.Add(24 * time.Hour)
		ids, err := f.s.IncompleteArtifacts(ctx, 24*time.Hour)
		must(t, err)
		if len(ids) != 1 || ids[0] != recent.ID {
			t.Errorf("incomplete artifacts past their grace: %v, want [%d]", ids, recent.ID)
		}
	})
}
