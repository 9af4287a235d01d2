// Package filestore keeps the bytes of artifact files. The database knows
// which content exists and how big each store is (store.AttachFile keeps
// total_size exact); this package only moves bytes in and out of a backend,
// addressed by their SHA-256.
//
// Content addressing is what makes uploads safe to retry and cheap to share:
// the same bytes uploaded twice, by two artifacts or by a retried upload,
// land at the same place, and a file is only ever visible under its name
// once it has been checked completely. Backends therefore never expose a
// half-written file: Put streams into a temporary object, checks the size and
// the hash while it streams, and only then publishes the result under its
// hash.
//
// Backends are chosen per file store (model.FileStore.Backend). Local is
// implemented here; an S3 backend implements the same interface later
// without any change to the API or the store.
package filestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/kiln-build/kiln/internal/model"
)

// Backend stores content by SHA-256. Implementations must be safe for
// concurrent use, including concurrent Puts of the same content (both must
// succeed and leave one complete copy).
type Backend interface {
	// Put reads exactly size bytes from r and stores them under sha256. It
	// fails with a *MismatchError, storing nothing, when r yields more or
	// fewer bytes or bytes with another hash; with ctx's error when ctx
	// ends first. Storing content that already exists is not an error.
	Put(ctx context.Context, sha256 string, size int64, r io.Reader) error
	// Open returns the content stored under sha256, or an error wrapping
	// ErrNotFound. Local backends return an io.ReadSeekCloser, so that
	// downloads can serve ranges.
	Open(ctx context.Context, sha256 string) (io.ReadCloser, error)
	// Delete removes the content; deleting missing content is not an error.
	Delete(ctx context.Context, sha256 string) error
	// Exists reports whether content is stored under sha256.
	Exists(ctx context.Context, sha256 string) (bool, error)
}

// ErrNotFound is wrapped by Open for content that is not stored.
var ErrNotFound = errors.New("content not found in the file store")

// MismatchError says that uploaded bytes are not what was declared. Nothing
// is stored when Put returns it; the API answers 400.
type MismatchError struct {
	WantSHA256, GotSHA256 string
	WantSize, GotSize     int64
}

// Error says what differed, size first.
func (e *MismatchError) Error() string {
	if e.GotSize != e.WantSize {
		if e.GotSize > e.WantSize {
			return fmt.Sprintf("upload is larger than the declared size of %d bytes", e.WantSize)
		}
		return fmt.Sprintf("upload has %d bytes but %d were declared", e.GotSize, e.WantSize)
	}
	return fmt.Sprintf("upload has sha256 %s but %s was declared", e.GotSHA256, e.WantSHA256)
}

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidSHA256 reports whether s is a lower-case hex SHA-256, the only form
// backends accept as an address (it is used in paths and object keys).
func ValidSHA256(s string) bool { return sha256Pattern.MatchString(s) }

// LocalConfig is the configuration of a Local file store, as stored in
// model.FileStore.Configuration.
type LocalConfig struct {
	// BaseDirectory is where content lives; it must be absolute.
	BaseDirectory string `json:"base_directory"`
}

// Open returns the backend of a file store. Backends hold no connections
// worth pooling yet, so opening one per request is cheap; callers may cache
// them by store id all the same.
func Open(fs *model.FileStore) (Backend, error) {
	switch fs.Backend {
	case model.BackendLocal:
		var c LocalConfig
		if len(fs.Configuration) > 0 {
			if err := json.Unmarshal(fs.Configuration, &c); err != nil {
				return nil, fmt.Errorf("file store %q: configuration: %w", fs.Name, err)
			}
		}
		if c.BaseDirectory == "" {
			return nil, fmt.Errorf("file store %q: configuration needs a base_directory", fs.Name)
		}
		l, err := NewLocal(c.BaseDirectory)
		if err != nil {
			return nil, fmt.Errorf("file store %q: %w", fs.Name, err)
		}
		return l, nil
	case model.BackendS3:
		return nil, fmt.Errorf("file store %q: the S3 backend is not implemented yet", fs.Name)
	}
	return nil, fmt.Errorf("file store %q: unknown backend %q", fs.Name, fs.Backend)
}
