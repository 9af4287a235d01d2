package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/filestore"
)

// Target is where reports go: a local file or a prefix of an S3 bucket.
// A Target is safe for concurrent use.
type Target interface {
	// Write stores one report made at at, whole or not at all, and says
	// where it went.
	Write(ctx context.Context, doc []byte, at time.Time) (string, error)
	// Check tells whether reports can be written there now, without
	// writing one.
	Check(ctx context.Context) error
	// String names the target for messages, without credentials.
	String() string
	Close() error
}

// LatestName is the object that holds the last report under an S3
// target's prefix, besides the report's own timestamped object.
const LatestName = "latest.json"

// ObjectName is the name of the object of the report made at at, under
// an S3 target's prefix: names sort by time.
func ObjectName(at time.Time) string {
	return "report-" + at.UTC().Format("20060102T150405Z") + ".json"
}

// TargetHelp says what a target looks like; errors about one end with it.
const TargetHelp = "give a file path (report.json) or s3://bucket/prefix/ with the S3 settings as query parameters " +
	"(s3://bucket/prefix/?endpoint=https://s3.example.com&region=eu-west-1&path_style=true)"

// s3Keys are the settings an S3 target takes as query parameters: those
// of an S3 file store (filestore.S3Config) that apply to writing a few
// objects. Bucket and prefix are the URL's host and path.
var s3Keys = map[string]string{
	"endpoint": "string", "region": "string", "path_style": "bool", "ca_file": "string",
	"credentials_file": "string", "credentials_profile": "string", "max_attempts": "int", "part_size": "int",
}

// s3KeyNames lists s3Keys, sorted.
func s3KeyNames() []string {
	names := make([]string, 0, len(s3Keys))
	for k := range s3Keys {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// DefaultS3Endpoint is the endpoint of an s3:// target that names none:
// AWS, in the region when one is given.
const DefaultS3Endpoint = "https://s3.amazonaws.com"

// ParseTarget reads a target: s3://bucket/prefix/?key=value… for S3 (keys
// as in an S3 file store's configuration; credentials from the
// environment or credentials_file, never from the URL), anything else
// that is not a URL as a file path. It checks what it can without a
// network request: an S3 target's settings and credentials, a file
// target's directory. Errors name the setting that is wrong and never
// repeat the target itself, which could hold a secret given by mistake.
func ParseTarget(s string) (Target, error) {
	switch {
	case strings.TrimSpace(s) == "":
		return nil, errors.New("no report target: " + TargetHelp)
	case strings.HasPrefix(s, "s3://"):
		return parseS3(s)
	case strings.Contains(s, "://"):
		scheme, _, _ := strings.Cut(s, "://")
		return nil, fmt.Errorf("%s:// is not a kind of report target: %s", scheme, TargetHelp)
	}
	return newFileTarget(s)
}

func parseS3(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("the s3:// target is not a valid URL: %s", TargetHelp)
	}
	if u.User != nil {
		return nil, errors.New("the s3:// target must not carry credentials: " + filestore.CredentialsHelp)
	}
	if u.Fragment != "" || u.Opaque != "" {
		return nil, errors.New("the s3:// target must be s3://bucket/prefix/, with settings as query parameters")
	}
	cfg := map[string]any{"bucket": u.Host}
	if p := strings.TrimPrefix(u.Path, "/"); p != "" {
		cfg["prefix"] = p
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("the s3:// target's query is not valid: %v", err)
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the first error is the same at every run
	for _, k := range keys {
		vs := q[k]
		if len(vs) != 1 {
			return nil, fmt.Errorf("s3 target: %s: give it once", k)
		}
		v := vs[0]
		switch s3Keys[k] {
		case "bool":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("s3 target: %s: want true or false, not %q", k, v)
			}
			cfg[k] = b
		case "int":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("s3 target: %s: want a whole number, not %q", k, v)
			}
			cfg[k] = n
		case "string":
			cfg[k] = v
		default:
			switch k {
			case "bucket", "prefix":
				return nil, fmt.Errorf("s3 target: %s: it is part of the URL, s3://bucket/prefix/", k)
			case "presigned_downloads", "presigned_expiry", "abandoned_upload_age":
				return nil, fmt.Errorf("s3 target: %s: applies to file stores, not to reports", k)
			}
			return nil, fmt.Errorf("s3 target: %s: unknown setting; an s3:// target takes %s as query parameters. %s",
				k, strings.Join(s3KeyNames(), ", "), filestore.CredentialsHelp)
		}
	}
	if _, ok := cfg["endpoint"]; !ok {
		cfg["endpoint"] = DefaultS3Endpoint
		if r, ok := cfg["region"].(string); ok && r != "" && !strings.ContainsAny(r, "/:@?#") {
			cfg["endpoint"] = "https://s3." + r + ".amazonaws.com"
		}
	}
	raw, _ := json.Marshal(cfg)
	c, err := filestore.ParseS3Config(raw)
	if err != nil {
		return nil, fmt.Errorf("s3 target: %w", err)
	}
	b, err := filestore.OpenBucket(*c)
	if err != nil {
		return nil, fmt.Errorf("s3 target: %w", err)
	}
	return &s3Target{bucket: b}, nil
}

// s3Target writes each report as its own timestamped object and again as
// latest.json.
type s3Target struct{ bucket *filestore.Bucket }

// Write stores the report under its timestamped name, then as
// latest.json: each object is whole or absent (filestore.Bucket.Put), and
// latest.json is only replaced once the report's own object is there, so
// a failure leaves the previous latest.json as it was.
func (t *s3Target) Write(ctx context.Context, doc []byte, at time.Time) (string, error) {
	name := ObjectName(at)
	for _, n := range []string{name, LatestName} {
		if err := t.bucket.Put(ctx, n, bytes.NewReader(doc), int64(len(doc)), "application/json"); err != nil {
			return "", err
		}
	}
	return t.bucket.String() + name, nil
}

// Check writes, reads back and deletes a small object (filestore's
// probe), and names the setting to fix when that fails.
func (t *s3Target) Check(ctx context.Context) error { return t.bucket.Probe(ctx) }

func (t *s3Target) String() string { return t.bucket.String() }

func (t *s3Target) Close() error { return t.bucket.Close() }

// fileTarget replaces one file with each report.
type fileTarget struct{ path string }

// reportMode is the mode of report files: the statistics name the farm's
// workspaces, the private ones too, so others may not read them.
const reportMode = 0o640

func newFileTarget(path string) (Target, error) {
	if strings.HasSuffix(path, "/") || strings.HasSuffix(path, string(filepath.Separator)) {
		return nil, fmt.Errorf("%s is a directory: give the report's file name, such as %s", path, filepath.Join(path, "report.json"))
	}
	if strings.IndexByte(path, 0) >= 0 {
		return nil, errors.New("the report's file name holds a NUL character")
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory: give the report's file name, such as %s", path, filepath.Join(path, "report.json"))
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("the directory %s of the report does not exist: create it first", dir)
		}
		if err == nil {
			err = errors.New("not a directory")
		}
		return nil, fmt.Errorf("the directory of the report, %s: %v", dir, err)
	}
	return &fileTarget{path: path}, nil
}

// Write writes the report to a temporary file beside the target, syncs
// it and renames it over the target: a reader sees the previous report or
// this one, never a part.
func (t *fileTarget) Write(_ context.Context, doc []byte, _ time.Time) (string, error) {
	dir, base := filepath.Split(t.path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return "", fmt.Errorf("writing the report: %w", err)
	}
	tmp := f.Name()
	err = f.Chmod(reportMode)
	if err == nil {
		_, err = f.Write(doc)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, t.path)
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("writing the report to %s: %w", t.path, err)
	}
	if d, err := os.Open(dir); err == nil { // the rename itself survives a crash
		d.Sync()
		d.Close()
	}
	return t.path, nil
}

// Check creates and removes a temporary file beside the target.
func (t *fileTarget) Check(context.Context) error {
	dir, base := filepath.Split(t.path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return fmt.Errorf("cannot write reports to %s: %w", t.path, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

func (t *fileTarget) String() string { return t.path }

func (t *fileTarget) Close() error { return nil }
