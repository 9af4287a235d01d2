package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
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
