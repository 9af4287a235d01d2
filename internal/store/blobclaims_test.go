package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestBlobClaims: an upload under way or a file keeps content from being
// deleted; a deletion under way keeps uploads of it from starting. Two
// store handles on one database stand for two server replicas.
func TestBlobClaims(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		a, b := open(t, dsn), open(t, dsn)
		if _, err := a.Bootstrap(ctx, "kiln_test_admin_secret_1234", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		fs, err := a.DefaultFileStore(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sha := strings.Repeat("c0", 32)

		up, err := a.ClaimBlobUpload(ctx, fs.ID, sha)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok, err := b.ClaimBlobDeletion(ctx, fs.ID, sha); ok || err != nil {
			t.Fatalf("content being uploaded was claimed for deletion: %v %v", ok, err)
		}
		// a second upload of the same content may run alongside
		up2, err := b.ClaimBlobUpload(ctx, fs.ID, sha)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []int64{up, up2, up} { // twice is harmless
			if err := a.ReleaseBlobClaim(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		del, ok, err := b.ClaimBlobDeletion(ctx, fs.ID, sha)
		if !ok || err != nil {
			t.Fatalf("unused content cannot be claimed for deletion: %v %v", ok, err)
		}
		if _, err := a.ClaimBlobUpload(ctx, fs.ID, sha); !errors.Is(err, store.ErrBlobBusy) {
			t.Fatalf("an upload started during a deletion: %v", err)
		}
		if _, ok, _ := a.ClaimBlobDeletion(ctx, fs.ID, sha); ok {
			t.Fatal("two deletions of one content at once")
		}
		if err := b.ReleaseBlobClaim(ctx, del); err != nil {
			t.Fatal(err)
		}
		if _, err := a.ClaimBlobUpload(ctx, fs.ID, sha); err != nil {
			t.Fatalf("upload after the deletion: %v", err)
		}
		// another content is not concerned
		if _, ok, err := a.ClaimBlobDeletion(ctx, fs.ID, strings.Repeat("c1", 32)); !ok || err != nil {
			t.Fatalf("other content: %v %v", ok, err)
		}
	})
}

// TestBlobClaimsOfDeadProcesses: claims of a process that died stop
// counting after their TTL, and the content of abandoned uploads is
// handed back for clean-up.
func TestBlobClaimsOfDeadProcesses(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		s := open(t, dsn)
		if _, err := s.Bootstrap(ctx, "kiln_test_admin_secret_1234", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		fs, _ := s.DefaultFileStore(ctx)
		now := time.Now()
		s.SetClock(func() time.Time { return now })
		deleting, uploading := strings.Repeat("d0", 32), strings.Repeat("e0", 32)
		if _, ok, err := s.ClaimBlobDeletion(ctx, fs.ID, deleting); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if _, err := s.ClaimBlobUpload(ctx, fs.ID, uploading); err != nil {
			t.Fatal(err)
		}
		now = now.Add(store.DeleteClaimTTL + time.Second)
		if _, err := s.ClaimBlobUpload(ctx, fs.ID, deleting); err != nil {
			t.Fatalf("a dead deletion still blocks uploads: %v", err)
		}
		if blobs, err := s.ExpireBlobClaims(ctx); err != nil || len(blobs) != 0 {
			t.Fatalf("young upload claims expired: %v %v", blobs, err)
		}
		now = now.Add(store.UploadClaimTTL)
		blobs, err := s.ExpireBlobClaims(ctx)
		if err != nil || len(blobs) != 2 || blobs[0].SHA256 != deleting || blobs[1].SHA256 != uploading {
			t.Fatalf("expired uploads: %+v %v", blobs, err)
		}
		if _, ok, err := s.ClaimBlobDeletion(ctx, fs.ID, uploading); !ok || err != nil {
			t.Fatalf("content of an abandoned upload cannot be deleted: %v %v", ok, err)
		}
	})
}

// TestBlobClaimsExclusive: replicas claiming one content concurrently
// never hold an upload claim and a deletion claim at the same time. Each
// claim's lifetime is recorded between its commit and its release; any
// overlap of an upload and a deletion fails the test.
func TestBlobClaimsExclusive(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		a, b := open(t, dsn), open(t, dsn)
		if _, err := a.Bootstrap(ctx, "kiln_test_admin_secret_1234", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		fs, _ := a.DefaultFileStore(ctx)
		sha := strings.Repeat("f0", 32)
		var mu sync.Mutex
		uploads, deletions, deleted, overlaps := 0, 0, 0, 0
		enter := func(upload bool) {
			mu.Lock()
			defer mu.Unlock()
			if upload {
				uploads++
			} else {
				deletions++
				deleted++
			}
			if uploads > 0 && deletions > 0 || deletions > 1 {
				overlaps++
			}
		}
		leave := func(upload bool) {
			mu.Lock()
			defer mu.Unlock()
			if upload {
				uploads--
			} else {
				deletions--
			}
		}
		var wg sync.WaitGroup
		for i := range 8 {
			s := []*store.SQL{a, b}[i%2]
			upload := i%4 < 2
			wg.Go(func() {
				// uploads claim 15 times; deletions try until 10 of
				// them, in all, got the content
				deadline := time.Now().Add(20 * time.Second)
				for n := 0; ; n++ {
					mu.Lock()
					stop := upload && n == 15 || !upload && (deleted >= 10 || time.Now().After(deadline))
					mu.Unlock()
					if stop {
						return
					}
					var id int64
					var err error
					if upload {
						if id, err = s.ClaimBlobUpload(ctx, fs.ID, sha); errors.Is(err, store.ErrBlobBusy) {
							continue
						}
					} else {
						var ok bool
						if id, ok, err = s.ClaimBlobDeletion(ctx, fs.ID, sha); err == nil && !ok {
							continue
						}
					}
					if err != nil {
						t.Error(err)
						return
					}
					enter(upload)
					time.Sleep(time.Millisecond)
					leave(upload)
					if err := s.ReleaseBlobClaim(ctx, id); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if overlaps != 0 {
			t.Fatalf("%d times an upload and a deletion (or two deletions) held one content at once", overlaps)
		}
		if deleted == 0 {
			t.Fatal("no deletion ever got its claim: the test proved nothing")
		}
	})
}
