package filestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Local keeps content in a directory tree: <base>/ab/cd/<sha256>, with two
// levels of fan-out so that no directory grows past 65536 entries per level.
// Uploads stream into <base>/.tmp first, on the same file system, so that
// publishing is one atomic rename.
type Local struct {
	base string
}

// NewLocal returns a Local backend rooted at base, creating the directory
// (0750) when missing. base must be absolute: a relative one would change
// meaning with the server's working directory.
func NewLocal(base string) (*Local, error) {
	if !filepath.IsAbs(base) {
		return nil, fmt.Errorf("local file store: base_directory %q must be an absolute path", base)
	}
	if err := os.MkdirAll(filepath.Join(base, ".tmp"), 0o750); err != nil {
		return nil, fmt.Errorf("local file store: %w", err)
	}
	return &Local{base: base}, nil
}

// Path is where content with this hash lives (whether or not it exists).
func (l *Local) Path(sha string) string {
	return filepath.Join(l.base, sha[0:2], sha[2:4], sha)
}

// ctxReader stops a copy when its context ends, so that an abandoned
// upload does not keep a goroutine reading.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

// Read fails once the context has ended.
func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Put streams r into a temporary file while hashing it, checks size and
// hash, syncs, and renames the file into place. On any failure the
// temporary file is removed and nothing is published.
func (l *Local) Put(ctx context.Context, sha string, size int64, r io.Reader) (err error) {
	if !ValidSHA256(sha) {
		return fmt.Errorf("local file store: %q is not a sha256", sha)
	}
	if size < 0 {
		return fmt.Errorf("local file store: negative size %d", size)
	}
	tmp, err := os.CreateTemp(filepath.Join(l.base, ".tmp"), "upload-*")
	if err != nil {
		return fmt.Errorf("local file store: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	// Read one byte more than declared to detect an oversized body
	// without storing more than size+1 bytes of it.
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(ctxReader{ctx, r}, size+1))
	if err != nil {
		return fmt.Errorf("local file store: receiving content: %w", err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if n != size || got != sha {
		return &MismatchError{WantSHA256: sha, GotSHA256: got, WantSize: size, GotSize: n}
	}
	if err := tmp.Chmod(0o640); err != nil {
		return fmt.Errorf("local file store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("local file store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("local file store: %w", err)
	}
	dst := l.Path(sha)
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return fmt.Errorf("local file store: %w", err)
	}
	// Same content under the same name: replacing an existing copy is
	// harmless and keeps concurrent Puts of one blob simple.
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("local file store: %w", err)
	}
	return nil
}

// Open opens the content for reading; the *os.File it returns can seek.
func (l *Local) Open(_ context.Context, sha string) (io.ReadCloser, error) {
	if !ValidSHA256(sha) {
		return nil, fmt.Errorf("local file store: %q is not a sha256: %w", sha, ErrNotFound)
	}
	f, err := os.Open(l.Path(sha))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("local file store: %s: %w", sha, ErrNotFound)
	}
	return f, err
}

// Delete removes the content, and is quiet when it is already gone.
func (l *Local) Delete(_ context.Context, sha string) error {
	if !ValidSHA256(sha) {
		return fmt.Errorf("local file store: %q is not a sha256", sha)
	}
	err := os.Remove(l.Path(sha))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local file store: %w", err)
	}
	return nil
}

// Exists reports whether the content is stored.
func (l *Local) Exists(_ context.Context, sha string) (bool, error) {
	if !ValidSHA256(sha) {
		return false, nil
	}
	_, err := os.Stat(l.Path(sha))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Probe writes, reads back and removes a small file in the store's
// directory, where uploads write theirs.
func (l *Local) Probe(_ context.Context) error {
	fail := func(step string, err error) error {
		return &ProbeError{Field: "base_directory", Message: fmt.Sprintf("kiln could not %s a test file in %s: %v", step, l.base, err)}
	}
	f, err := os.CreateTemp(filepath.Join(l.base, ".tmp"), "probe-*")
	if err != nil {
		return fail("write", err)
	}
	defer os.Remove(f.Name())
	body := []byte("kiln checks that it may write here; this file is deleted at once\n")
	_, err = f.Write(body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail("write", err)
	}
	if b, err := os.ReadFile(f.Name()); err != nil || len(b) != len(body) {
		return fail("read back", fmt.Errorf("%d bytes read: %v", len(b), err))
	}
	if err := os.Remove(f.Name()); err != nil {
		return fail("delete", err)
	}
	return nil
}

// LocalAbandonedAge is how long a temporary upload file stays unchanged
// before Sweep counts its upload as abandoned: an upload under way writes
// to its file all the time.
const LocalAbandonedAge = 24 * time.Hour

// Sweep removes temporary upload files that have not changed for
// LocalAbandonedAge: those of a server killed in the middle of an upload.
func (l *Local) Sweep(_ context.Context) (int, error) {
	dir := filepath.Join(l.base, ".tmp")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("local file store: %w", err)
	}
	removed := 0
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || time.Since(info.ModTime()) < LocalAbandonedAge {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
			removed++
		}
	}
	return removed, nil
}
