package filestore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testpeers"
)

// TestS3Sweep: the multipart uploads that a killed server left behind
// are aborted once older than abandoned_upload_age; younger ones, and
// uploads of keys that are not content, are left alone.
func TestS3Sweep(t *testing.T) {
	ctx := context.Background()
	srv := testpeers.StartS3(t, testpeers.S3Options{})
	t.Setenv(EnvAccessKeyID, srv.Key.ID)
	t.Setenv(EnvSecretAccessKey, srv.Key.Secret)
	s, err := NewS3(S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Region: srv.Region, Prefix: "store"})
	if err != nil {
		t.Fatal(err)
	}
	sha := strings.Repeat("ab", 32)
	blob := "store/" + blobName(sha)
	for _, k := range []string{blob, "store/reports/latest.json", "elsewhere/" + blobName(sha)} {
		srv.StartUpload(t, k)
	}
	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("young uploads swept: %d %v", n, err)
	}
	s.abandoned = 0 // every upload under way is now old enough
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if got := srv.Uploads(t, ""); len(got) != 2 || got[0] != "elsewhere/"+blobName(sha) || got[1] != "store/reports/latest.json" {
		t.Fatalf("left: %v", got)
	}
}

func TestIsBlobName(t *testing.T) {
	sha := strings.Repeat("0f", 32)
	for name, want := range map[string]bool{
		blobName(sha):                   true,
		"0f/0f/" + sha[:63]:             false,
		"0e/0f/" + sha:                  false,
		"0f/0f/" + strings.ToUpper(sha): false,
		"0f/0f/" + sha + "x":            false,
		".kiln-probe-0123456789abcdef":  false,
	} {
		if isBlobName(name) != want {
			t.Errorf("isBlobName(%q) = %v", name, !want)
		}
	}
}

func TestLocalSweep(t *testing.T) {
	l, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(l.base, ".tmp", "upload-old")
	young := filepath.Join(l.base, ".tmp", "upload-young")
	for _, f := range []string{old, young} {
		if err := os.WriteFile(f, []byte("part"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-LocalAbandonedAge - time.Minute)
	os.Chtimes(old, past, past)
	if n, err := l.Sweep(context.Background()); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatal("the abandoned file is still there")
	}
	if _, err := os.Stat(young); err != nil {
		t.Fatal("an upload under way was swept")
	}
}
