package main

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
	"github.com/spf13/afero"
)

// diskBackend keeps objects in a directory (gofakes3's s3afero) and the
// parts of multipart uploads in files, so that uploads of gigabytes (the
// memory benchmarks') stream to disk: gofakes3's own multipart uploads
// keep every part in memory and copy them all once more to complete.
type diskBackend struct {
	*s3afero.MultiBucketBackend
	parts string
	clock gofakes3.TimeSource

	mu      sync.Mutex
	next    int
	uploads map[gofakes3.UploadID]*diskUpload
}

type diskUpload struct {
	bucket, object string
	meta           map[string]string
	initiated      gofakes3.ContentTime
	parts          map[int]diskPart
}

type diskPart struct {
	path string
	size int64
	etag string
}

func newDiskBackend(dir string, clock gofakes3.TimeSource) (*diskBackend, error) {
	objects := filepath.Join(dir, "objects")
	if err := os.MkdirAll(objects, 0o700); err != nil {
		return nil, err
	}
	parts := filepath.Join(dir, "parts")
	if err := os.MkdirAll(parts, 0o700); err != nil {
		return nil, err
	}
	b, err := s3afero.MultiBucket(afero.NewBasePathFs(afero.NewOsFs(), objects))
	if err != nil {
		return nil, err
	}
	return &diskBackend{MultiBucketBackend: b, parts: parts, clock: clock, uploads: map[gofakes3.UploadID]*diskUpload{}}, nil
}

var _ gofakes3.MultipartBackend = (*diskBackend)(nil)

func (d *diskBackend) get(bucket, object string, id gofakes3.UploadID) (*diskUpload, error) {
	u, ok := d.uploads[id]
	if !ok || u.bucket != bucket || u.object != object {
		return nil, gofakes3.ErrNoSuchUpload
	}
	return u, nil
}

func (d *diskBackend) CreateMultipartUpload(bucket, object string, meta map[string]string) (gofakes3.UploadID, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.next++
	id := gofakes3.UploadID(fmt.Sprint(d.next))
	d.uploads[id] = &diskUpload{bucket: bucket, object: object, meta: meta,
		initiated: gofakes3.NewContentTime(d.clock.Now()), parts: map[int]diskPart{}}
	return id, nil
}

func (d *diskBackend) UploadPart(bucket, object string, id gofakes3.UploadID, n int, size int64, input io.Reader) (string, error) {
	d.mu.Lock()
	_, err := d.get(bucket, object, id)
	d.mu.Unlock()
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(d.parts, "part-*")
	if err != nil {
		return "", err
	}
	h := md5.New()
	written, err := io.Copy(io.MultiWriter(f, h), input)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && written != size {
		err = gofakes3.ErrIncompleteBody
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	etag := `"` + hex.EncodeToString(h.Sum(nil)) + `"`
	d.mu.Lock()
	defer d.mu.Unlock()
	u, err := d.get(bucket, object, id)
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	if old, ok := u.parts[n]; ok {
		os.Remove(old.path)
	}
	u.parts[n] = diskPart{path: f.Name(), size: size, etag: etag}
	return etag, nil
}

func (d *diskBackend) ListMultipartUploads(bucket string, _ *gofakes3.UploadListMarker, prefix gofakes3.Prefix, limit int64) (*gofakes3.ListMultipartUploadsResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	res := &gofakes3.ListMultipartUploadsResult{Bucket: bucket, Prefix: prefix.Prefix, MaxUploads: limit}
	for id, u := range d.uploads {
		if u.bucket == bucket && strings.HasPrefix(u.object, prefix.Prefix) {
			res.Uploads = append(res.Uploads, gofakes3.ListMultipartUploadItem{Key: u.object, UploadID: id, Initiated: u.initiated})
		}
	}
	sort.Slice(res.Uploads, func(i, j int) bool { return res.Uploads[i].Key < res.Uploads[j].Key })
	return res, nil
}

func (d *diskBackend) ListParts(bucket, object string, id gofakes3.UploadID, _ int, limit int64) (*gofakes3.ListMultipartUploadPartsResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u, err := d.get(bucket, object, id)
	if err != nil {
		return nil, err
	}
	res := &gofakes3.ListMultipartUploadPartsResult{Bucket: bucket, Key: object, UploadID: id, MaxParts: limit}
	for n, p := range u.parts {
		res.Parts = append(res.Parts, gofakes3.ListMultipartUploadPartItem{PartNumber: n, ETag: p.etag, Size: p.size})
	}
	sort.Slice(res.Parts, func(i, j int) bool { return res.Parts[i].PartNumber < res.Parts[j].PartNumber })
	return res, nil
}

func (d *diskBackend) AbortMultipartUpload(bucket, object string, id gofakes3.UploadID) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	u, err := d.get(bucket, object, id)
	if err != nil {
		return err
	}
	for _, p := range u.parts {
		os.Remove(p.path)
	}
	delete(d.uploads, id)
	return nil
}

func (d *diskBackend) CompleteMultipartUpload(bucket, object string, id gofakes3.UploadID, in *gofakes3.CompleteMultipartUploadRequest) (gofakes3.VersionID, string, error) {
	d.mu.Lock()
	u, err := d.get(bucket, object, id)
	if err == nil {
		delete(d.uploads, id) // ours now
	}
	d.mu.Unlock()
	if err != nil {
		return "", "", err
	}
	defer func() {
		for _, p := range u.parts {
			os.Remove(p.path)
		}
	}()
	var readers []io.Reader
	var size int64
	sums := md5.New()
	for i, want := range in.Parts {
		p, ok := u.parts[want.PartNumber]
		if !ok || strings.Trim(p.etag, `"`) != strings.Trim(want.ETag, `"`) || i > 0 && want.PartNumber <= in.Parts[i-1].PartNumber {
			return "", "", gofakes3.ErrInvalidPart
		}
		f, err := os.Open(p.path)
		if err != nil {
			return "", "", err
		}
		defer f.Close()
		readers = append(readers, f)
		size += p.size
		raw, _ := hex.DecodeString(strings.Trim(p.etag, `"`))
		sums.Write(raw)
	}
	res, err := d.PutObject(bucket, object, u.meta, io.MultiReader(readers...), size, nil)
	if err != nil {
		return "", "", err
	}
	return res.VersionID, fmt.Sprintf(`"%s-%d"`, hex.EncodeToString(sums.Sum(nil)), len(in.Parts)), nil
}
