package blobs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/blobs"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// setup opens a store on dsn with its bootstrap Local file store.
func setup(t *testing.T, dsn string) (*store.SQL, *model.FileStore) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Bootstrap(ctx, "kiln_test_admin_secret_1234", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	fs, err := st.DefaultFileStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st, fs
}

func exists(t *testing.T, m *blobs.Manager, fs *model.FileStore, sha string) bool {
	t.Helper()
	be, err := m.Open(fs)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := be.Exists(context.Background(), sha)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestOpenKeepsBackends(t *testing.T) {
	st, fs := setup(t, testdb.SQLite(t))
	m := blobs.New(st, blobs.Options{})
	a, _ := m.Open(fs)
	b, _ := m.Open(fs)
	if a != b {
		t.Fatal("the same store opened twice")
	}
	moved := *fs
	moved.Configuration = json.RawMessage(`{"base_directory": "` + t.TempDir() + `"}`)
	if c, _ := m.Open(&moved); c == a {
		t.Fatal("a changed configuration kept the old backend")
	}
}

// TestUpload: content is written and attached under a claim; a failed
// attach deletes what it wrote; an upload waits for a deletion of its
// content to end, and gives up with a BusyError after BusyWait.
func TestUpload(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		st, fs := setup(t, dsn)
		m := blobs.New(st, blobs.Options{BusyWait: 300 * time.Millisecond})
		data := []byte("content\n")
		sha := sum(data)
		attached := false
		if err := m.Upload(ctx, fs, sha, int64(len(data)), bytes.NewReader(data), func(context.Context) error {
			attached = true
			return nil
		}); err != nil || !attached || !exists(t, m, fs, sha) {
			t.Fatalf("upload: %v, attached %v", err, attached)
		}
		refused := errors.New("artifact gone")
		if err := m.Upload(ctx, fs, sha, int64(len(data)), bytes.NewReader(data), func(context.Context) error { return refused }); !errors.Is(err, refused) {
			t.Fatalf("want the attach error, got %v", err)
		}
		if exists(t, m, fs, sha) {
			t.Fatal("the content of a refused attach was kept, though nothing holds it")
		}

		// a deletion under way: the upload waits for it
		claim, ok, err := st.ClaimBlobDeletion(ctx, fs.ID, sha)
		if !ok || err != nil {
			t.Fatal(ok, err)
		}
		done := make(chan error, 1)
		go func() {
			done <- m.Upload(ctx, fs, sha, int64(len(data)), bytes.NewReader(data), func(context.Context) error { return nil })
		}()
		time.Sleep(50 * time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("the upload did not wait for the deletion: %v", err)
		default:
		}
		if err := st.ReleaseBlobClaim(ctx, claim); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil || !exists(t, m, fs, sha) {
			t.Fatalf("upload after the deletion: %v", err)
		}
		// …and gives up when it lasts
		if _, ok, _ := st.ClaimBlobDeletion(ctx, fs.ID, strings64("ee")); !ok {
			t.Fatal("claim")
		}
		var busy *blobs.BusyError
		if err := m.Upload(ctx, fs, strings64("ee"), 1, bytes.NewReader([]byte("x")), nil); !errors.As(err, &busy) {
			t.Fatalf("want a BusyError, got %v", err)
		}
	})
}

// TestSweepAbandonedClaims: the content of an upload whose process died
// is deleted once its claim expires, unless a file holds it.
func TestSweepAbandonedClaims(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		st, fs := setup(t, dsn)
		m := blobs.New(st, blobs.Options{})
		data := []byte("written, never attached\n")
		sha := sum(data)
		now := time.Now()
		st.SetClock(func() time.Time { return now })
		be, _ := m.Open(fs)
		if _, err := st.ClaimBlobUpload(ctx, fs.ID, sha); err != nil { // then the process dies
			t.Fatal(err)
		}
		if err := be.Put(ctx, sha, int64(len(data)), bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if s := m.Sweep(ctx); s.Claims.Deleted != 0 || !exists(t, m, fs, sha) {
			t.Fatalf("a live upload's content was swept: %+v", s)
		}
		now = now.Add(store.UploadClaimTTL + time.Minute)
		if s := m.Sweep(ctx); s.Claims.Deleted != 1 || s.Errors != 0 || exists(t, m, fs, sha) {
			t.Fatalf("sweep: %+v", s)
		}
	})
}

func strings64(pair string) string {
	var b bytes.Buffer
	for range 32 {
		b.WriteString(pair)
	}
	return b.String()
}
