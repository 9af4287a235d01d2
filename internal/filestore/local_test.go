package filestore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-build/kiln/internal/filestore"
	"github.com/kiln-build/kiln/internal/model"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func newLocal(t *testing.T) (*filestore.Local, string) {
	t.Helper()
	dir := t.TempDir()
	l, err := filestore.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	return l, dir
}

// tmpEmpty checks that no upload left a temporary file behind.
func tmpEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, ".tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
}

func TestLocalRoundTrip(t *testing.T) {
	ctx := context.Background()
	l, dir := newLocal(t)
	data := []byte("hello, kiln\n")
	sha := sum(data)
	if ok, _ := l.Exists(ctx, sha); ok {
		t.Fatal("exists before put")
	}
	if err := l.Put(ctx, sha, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	// a second put of the same content is fine
	if err := l.Put(ctx, sha, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if ok, err := l.Exists(ctx, sha); !ok || err != nil {
		t.Fatalf("exists: %v %v", ok, err)
	}
	rc, err := l.Open(ctx, sha)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %q", got)
	}
	if _, ok := rc.(io.Seeker); !ok {
		t.Fatal("local content must be seekable for range downloads")
	}
	if !strings.HasPrefix(l.Path(sha), filepath.Join(dir, sha[:2], sha[2:4])) {
		t.Fatalf("unexpected layout %s", l.Path(sha))
	}
	if err := l.Delete(ctx, sha); err != nil {
		t.Fatal(err)
	}
	if err := l.Delete(ctx, sha); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := l.Open(ctx, sha); !errors.Is(err, filestore.ErrNotFound) {
		t.Fatalf("open after delete: %v", err)
	}
	tmpEmpty(t, dir)
}

func TestLocalPutRejectsMismatch(t *testing.T) {
	ctx := context.Background()
	data := []byte("declared content")
	sha := sum(data)
	for _, tc := range []struct {
		name string
		body []byte
		size int64
	}{
		{"other bytes", []byte("declared CONTENT"), int64(len(data))},
		{"short", data[:5], int64(len(data))},
		{"long", append(append([]byte{}, data...), "!!"...), int64(len(data))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, dir := newLocal(t)
			err := l.Put(ctx, sha, tc.size, bytes.NewReader(tc.body))
			var me *filestore.MismatchError
			if !errors.As(err, &me) {
				t.Fatalf("want MismatchError, got %v", err)
			}
			if ok, _ := l.Exists(ctx, sha); ok {
				t.Fatal("mismatched content was published")
			}
			tmpEmpty(t, dir)
		})
	}
}

func TestLocalPutCancelled(t *testing.T) {
	l, dir := newLocal(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	data := []byte("x")
	if err := l.Put(ctx, sum(data), 1, bytes.NewReader(data)); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	tmpEmpty(t, dir)
}

func TestLocalConcurrentPuts(t *testing.T) {
	ctx := context.Background()
	l, dir := newLocal(t)
	data := bytes.Repeat([]byte("kiln"), 1<<16)
	sha := sum(data)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- l.Put(ctx, sha, int64(len(data)), bytes.NewReader(data))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(l.Path(sha))
	if err != nil || sum(b) != sha {
		t.Fatalf("stored copy is not intact: %v", err)
	}
	tmpEmpty(t, dir)
}

func TestOpenBackend(t *testing.T) {
	dir := t.TempDir()
	b, err := filestore.Open(&model.FileStore{Name: "default", Backend: model.BackendLocal,
		Configuration: []byte(`{"base_directory": "` + dir + `"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.(*filestore.Local); !ok {
		t.Fatalf("got %T", b)
	}
	for _, fs := range []*model.FileStore{
		{Name: "s3", Backend: model.BackendS3},
		{Name: "nobase", Backend: model.BackendLocal, Configuration: []byte(`{}`)},
		{Name: "relative", Backend: model.BackendLocal, Configuration: []byte(`{"base_directory": "files"}`)},
		{Name: "odd", Backend: "Tape"},
	} {
		if _, err := filestore.Open(fs); err == nil || !strings.Contains(err.Error(), fs.Name) {
			t.Errorf("%s: want an error naming the store, got %v", fs.Name, err)
		}
	}
}

func ExampleLocal_Put() {
	dir, _ := os.MkdirTemp("", "kiln-example")
	defer os.RemoveAll(dir)
	l, _ := filestore.NewLocal(dir)
	data := []byte("build log\n")
	h := sha256.Sum256(data)
	sha := hex.EncodeToString(h[:])
	err := l.Put(context.Background(), sha, int64(len(data)), bytes.NewReader(data))
	ok, _ := l.Exists(context.Background(), sha)
	fmt.Println(err == nil, ok)
	// Output: true true
}
