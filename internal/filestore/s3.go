package filestore

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
)

// S3 keeps content in a bucket of an S3-compatible object store, as the
// object <prefix>ab/cd/<sha256> (the layout of Local). Uploads follow
// Bucket's rules: the object appears whole and checked, or not at all;
// an interrupted multipart upload is aborted, or, when its server was
// killed, aborted by Sweep once older than abandoned_upload_age.
type S3 struct {
	bucket    *Bucket
	presign   bool
	expiry    time.Duration
	abandoned time.Duration
}

// NewS3 returns the backend of an S3 configuration. It makes no request;
// Probe checks that the bucket can be used.
func NewS3(cfg S3Config, opts ...BucketOption) (*S3, error) {
	b, err := OpenBucket(cfg, opts...)
	if err != nil {
		return nil, err
	}
	return &S3{bucket: b, presign: cfg.PresignedDownloads, expiry: cfg.presignedExpiry(), abandoned: cfg.abandonedUploadAge()}, nil
}

// Close closes the idle connections to the bucket.
func (s *S3) Close() error { return s.bucket.Close() }

// Bucket is where the content lives.
func (s *S3) Bucket() *Bucket { return s.bucket }

// blobName is the object name of content, under the prefix.
func blobName(sha string) string { return sha[0:2] + "/" + sha[2:4] + "/" + sha }

// isBlobName reports whether an object name (under the prefix) is one of
// content.
func isBlobName(name string) bool {
	return len(name) == 70 && ValidSHA256(name[6:]) && name[0:2] == name[6:8] && name[3:5] == name[8:10] &&
		name[2] == '/' && name[5] == '/'
}

// Put streams r to the object of sha, checking size and hash before the
// object becomes visible.
func (s *S3) Put(ctx context.Context, sha string, size int64, r io.Reader) error {
	if !ValidSHA256(sha) {
		return fmt.Errorf("S3 file store: %q is not a sha256", sha)
	}
	return s.bucket.put(ctx, s.bucket.Key(blobName(sha)), r, size, "application/octet-stream", func(sum []byte) error {
		if got := hex.EncodeToString(sum); got != sha {
			return &MismatchError{WantSHA256: sha, GotSHA256: got, WantSize: size, GotSize: size}
		}
		return nil
	})
}

// Open returns the content as an io.ReadSeekCloser: downloads serve
// ranges, each read from S3 with a ranged GET.
func (s *S3) Open(ctx context.Context, sha string) (io.ReadCloser, error) {
	if !ValidSHA256(sha) {
		return nil, fmt.Errorf("S3 file store: %q is not a sha256: %w", sha, ErrNotFound)
	}
	return s.bucket.Open(ctx, blobName(sha))
}

// Delete removes the content; missing content is not an error.
func (s *S3) Delete(ctx context.Context, sha string) error {
	if !ValidSHA256(sha) {
		return fmt.Errorf("S3 file store: %q is not a sha256", sha)
	}
	return s.bucket.Delete(ctx, blobName(sha))
}

// Exists reports whether the content is stored.
func (s *S3) Exists(ctx context.Context, sha string) (bool, error) {
	if !ValidSHA256(sha) {
		return false, nil
	}
	return s.bucket.Exists(ctx, blobName(sha))
}

// Probe writes, reads back and deletes a small object.
func (s *S3) Probe(ctx context.Context) error { return s.bucket.Probe(ctx) }

// Sweep aborts the multipart uploads of content older than the store's
// abandoned_upload_age: those of servers killed in the middle of an
// upload. Other uploads under the prefix are left alone.
func (s *S3) Sweep(ctx context.Context) (int, error) {
	return s.bucket.AbortAbandonedUploads(ctx, s.abandoned, isBlobName)
}

// DownloadURL returns a presigned URL of the content, valid for the
// store's presigned_expiry, when the store is configured with
// presigned_downloads; nil otherwise.
func (s *S3) DownloadURL(ctx context.Context, sha, filename, contentType string) (*url.URL, error) {
	if !s.presign || !ValidSHA256(sha) {
		return nil, nil
	}
	return s.bucket.PresignGet(ctx, blobName(sha), s.expiry, strings.ReplaceAll(filename, "\n", ""), contentType)
}
