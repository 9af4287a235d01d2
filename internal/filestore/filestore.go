// Package filestore keeps the bytes of artifact files. The database knows
// which content exists and how big each store is (store.AttachFile keeps
// total_size exact); this package only moves bytes in and out of a backend,
// addressed by their SHA-256.
//
// Content addressing is what makes uploads safe to retry and cheap to share:
// the same bytes uploaded twice, by two artifacts or by a retried upload,
// land at the same place, and a file is only ever visible under its name
// once it has been checked completely. Backends therefore never expose a
// half-written file: Put streams into something invisible (a temporary
// file for Local, a multipart upload or a request not yet sent for S3),
// checks the size and the hash while it streams, and only then publishes
// the result under its hash. What an interrupted upload leaves behind when
// its process is killed is invisible, and Sweep removes it once it is old.
//
// Backends are chosen per file store (model.FileStore.Backend): Local (a
// directory, local.go) and S3 (a bucket of any S3-compatible object store,
// s3.go, over Bucket in bucket.go). Configurations are decoded strictly
// (config.go): an unknown key, a value of the wrong type and anything that
// looks like a secret are refused with a *ConfigError naming the key, since
// kiln stores no credentials (s3creds.go says where S3 keys come from).
// Probe checks that a configured store can be written, and fails with a
// *ProbeError naming the key to fix.
//
// Which blobs may be deleted, and when, is not decided here: see package
// blobs, which coordinates uploads and deletions across server replicas.
package filestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
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
	// Probe checks that content can be written, read and deleted, by
	// doing so with a small file, and fails with a *ProbeError naming the
	// configuration key to fix.
	Probe(ctx context.Context) error
	// Sweep removes what uploads interrupted by a killed process left
	// behind (invisible, but taking space), once it is old enough that no
	// upload under way can own it, and says how much it removed. Several
	// processes may sweep one store at once.
	Sweep(ctx context.Context) (int, error)
}

// Redirector is implemented by backends that can let a client download
// content from the backend itself rather than through kiln.
type Redirector interface {
	// DownloadURL returns a URL that serves the content (with this file
	// name and Content-Type) for a limited time without credentials, or
	// nil when the store is not configured for it.
	DownloadURL(ctx context.Context, sha256, filename, contentType string) (*url.URL, error)
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

// Open returns the backend of a file store, after checking its
// configuration (a *ConfigError names the key that is wrong). S3 backends
// hold a pool of connections: open one per store and configuration, and
// keep it (package blobs does).
func Open(fs *model.FileStore, opts ...BucketOption) (Backend, error) {
	switch fs.Backend {
	case model.BackendLocal:
		c, err := ParseLocalConfig(fs.Configuration)
		if err != nil {
			return nil, fmt.Errorf("file store %q: configuration: %w", fs.Name, err)
		}
		l, err := NewLocal(c.BaseDirectory)
		if err != nil {
			return nil, fmt.Errorf("file store %q: %w", fs.Name, err)
		}
		return l, nil
	case model.BackendS3:
		c, err := ParseS3Config(fs.Configuration)
		if err != nil {
			return nil, fmt.Errorf("file store %q: configuration: %w", fs.Name, err)
		}
		b, err := NewS3(*c, opts...)
		if err != nil {
			return nil, fmt.Errorf("file store %q: configuration: %w", fs.Name, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("file store %q: unknown backend %q", fs.Name, fs.Backend)
}
