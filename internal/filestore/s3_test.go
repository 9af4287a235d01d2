package filestore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/filestore"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testpeers"
)

// s3Config is a configuration of the test server's bucket; its keys are
// put in the environment, where kiln takes them from.
func s3Config(t *testing.T, srv *testpeers.S3) filestore.S3Config {
	t.Helper()
	t.Setenv(filestore.EnvAccessKeyID, srv.Key.ID)
	t.Setenv(filestore.EnvSecretAccessKey, srv.Key.Secret)
	return filestore.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Region: srv.Region, Prefix: "store/",
		PartSize: filestore.MinPartSize, MaxAttempts: 2}
}

func newS3(t *testing.T, cfg filestore.S3Config) *filestore.S3 {
	t.Helper()
	s, err := filestore.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// nothingLeft checks that no object and no unfinished upload is in the
// store's prefix.
func nothingLeft(t *testing.T, srv *testpeers.S3) {
	t.Helper()
	if o := srv.Objects(t, "store/"); len(o) != 0 {
		t.Fatalf("objects left behind: %v", o)
	}
	if u := srv.Uploads(t, "store/"); len(u) != 0 {
		t.Fatalf("unfinished uploads left behind: %v", u)
	}
}

func TestS3RoundTrip(t *testing.T) {
	ctx := context.Background()
	srv := testpeers.StartS3(t, testpeers.S3Options{})
	s := newS3(t, s3Config(t, srv))
	for _, tc := range []struct {
		name string
		size int
	}{{"empty", 0}, {"one request", 1000}, {"exactly one part", filestore.MinPartSize}, {"multipart", 2*filestore.MinPartSize + 12345}} {
		t.Run(tc.name, func(t *testing.T) {
			data := randomBytes(tc.size)
			sha := sum(data)
			if ok, err := s.Exists(ctx, sha); ok || err != nil {
				t.Fatalf("exists before put: %v %v", ok, err)
			}
			if err := s.Put(ctx, sha, int64(len(data)), bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			if err := s.Put(ctx, sha, int64(len(data)), bytes.NewReader(data)); err != nil {
				t.Fatalf("second put: %v", err)
			}
			want := "store/" + sha[:2] + "/" + sha[2:4] + "/" + sha
			if got := srv.Objects(t, "store/"); len(got) != 1 || got[0] != want {
				t.Fatalf("objects %v, want [%s]", got, want)
			}
			if ok, err := s.Exists(ctx, sha); !ok || err != nil {
				t.Fatalf("exists: %v %v", ok, err)
			}
			rc, err := s.Open(ctx, sha)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes (want %d): %v", len(got), len(data), err)
			}
			// ranges, as http.ServeContent asks for them
			rs := rc.(io.ReadSeeker)
			if n, err := rs.Seek(0, io.SeekEnd); err != nil || n != int64(len(data)) {
				t.Fatalf("seek to end: %d %v", n, err)
			}
			if len(data) > 10 {
				if _, err := rs.Seek(int64(len(data)-10), io.SeekStart); err != nil {
					t.Fatal(err)
				}
				tail, err := io.ReadAll(rs)
				if err != nil || !bytes.Equal(tail, data[len(data)-10:]) {
					t.Fatalf("range read %x: %v", tail, err)
				}
			}
			rc.Close()
			if err := s.Delete(ctx, sha); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, sha); err != nil {
				t.Fatalf("second delete: %v", err)
			}
			if _, err := s.Open(ctx, sha); !errors.Is(err, filestore.ErrNotFound) {
				t.Fatalf("open after delete: %v", err)
			}
			nothingLeft(t, srv)
		})
	}
}

// TestS3PutRejectsMismatch: content that is not what was declared is
// never visible, whether sent in one request or in parts, and leaves no
// unfinished upload.
func TestS3PutRejectsMismatch(t *testing.T) {
	ctx := context.Background()
	srv := testpeers.StartS3(t, testpeers.S3Options{})
	s := newS3(t, s3Config(t, srv))
	for _, size := range []int{100, 2*filestore.MinPartSize + 7} {
		data := randomBytes(size)
		sha := sum(data)
		other := append([]byte{}, data...)
		other[len(other)-1] ^= 1
		for name, body := range map[string][]byte{
			"other bytes": other,
			"short":       data[:len(data)-1],
			"long":        append(append([]byte{}, data...), '!'),
		} {
			err := s.Put(ctx, sha, int64(size), bytes.NewReader(body))
			var me *filestore.MismatchError
			if !errors.As(err, &me) {
				t.Fatalf("%d bytes, %s: want a MismatchError, got %v", size, name, err)
			}
			nothingLeft(t, srv)
		}
	}
}

// slowReader yields its bytes a chunk at a time until its context ends.
type slowReader struct {
	r     io.Reader
	chunk int
	ctx   context.Context
}

func (s *slowReader) Read(p []byte) (int, error) {
	select {
	case <-s.ctx.Done():
		return 0, s.ctx.Err()
	case <-time.After(time.Millisecond):
	}
	return s.r.Read(p[:min(len(p), s.chunk)])
}

// TestS3PutInterrupted: an upload whose sender goes away in the middle of
// a multipart upload aborts it; nothing is visible and nothing is left.
func TestS3PutInterrupted(t *testing.T) {
	srv := testpeers.StartS3(t, testpeers.S3Options{})
	s := newS3(t, s3Config(t, srv))
	data := randomBytes(3 * filestore.MinPartSize)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &countingReader{r: bytes.NewReader(data)}
	done := make(chan error, 1)
	go func() { done <- s.Put(ctx, sum(data), int64(len(data)), &slowReader{r: r, chunk: 256 << 10, ctx: ctx}) }()
	for r.n.Load() < int64(filestore.MinPartSize+(1<<20)) { // a part is written, the next under way
		time.Sleep(5 * time.Millisecond)
	}
	if u := srv.Uploads(t, "store/"); len(u) != 1 {
		t.Fatalf("want one upload under way, got %v", u)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	nothingLeft(t, srv)
}

func TestS3ConcurrentPuts(t *testing.T) {
	ctx := context.Background()
	srv := testpeers.StartS3(t, testpeers.S3Options{})
	s := newS3(t, s3Config(t, srv))
	data := randomBytes(filestore.MinPartSize + 100)
	sha := sum(data)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- s.Put(ctx, sha, int64(len(data)), bytes.NewReader(data)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	rc, err := s.Open(ctx, sha)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if b, _ := io.ReadAll(rc); sum(b) != sha {
		t.Fatal("stored copy is not intact")
	}
	if u := srv.Uploads(t, "store/"); len(u) != 0 {
		t.Fatalf("unfinished uploads: %v", u)
	}
}

// TestS3Probe: validation says what is wrong, naming the key to fix.
func TestS3Probe(t *testing.T) {
	ctx := context.Background()
	srv := testpeers.StartS3(t, testpeers.S3Options{})
	tlsSrv := testpeers.StartS3(t, testpeers.S3Options{TLS: true})
	closed := func() string { // a port nobody listens on
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return "http://" + l.Addr().String()
	}()
	keys := func(k testpeers.Key) func(t *testing.T, c *filestore.S3Config) {
		return func(t *testing.T, c *filestore.S3Config) {
			t.Setenv(filestore.EnvAccessKeyID, k.ID)
			t.Setenv(filestore.EnvSecretAccessKey, k.Secret)
		}
	}
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, c *filestore.S3Config)
		field  string // "" for success
		says   string
	}{
		{"good", func(*testing.T, *filestore.S3Config) {}, "", ""},
		{"region asked from the endpoint", func(_ *testing.T, c *filestore.S3Config) { c.Region = "" }, "", ""},
		{"unreachable", func(_ *testing.T, c *filestore.S3Config) { c.Endpoint = closed }, "endpoint", "cannot connect"},
		{"no such bucket", func(_ *testing.T, c *filestore.S3Config) { c.Bucket = "nobucket" }, "bucket", `bucket "nobucket" does not exist`},
		{"unknown key", keys(testpeers.Key{ID: "nobody", Secret: "x"}), "credentials_file", "does not know the access key id"},
		{"wrong secret", keys(testpeers.Key{ID: srv.Key.ID, Secret: "wrong"}), "credentials_file", "does not match"},
		{"read-only key", keys(srv.ReadOnlyKey), "credentials_file", "access denied"},
		{"wrong region", func(_ *testing.T, c *filestore.S3Config) { c.Region = "eu-west-3" }, "region", "wrong region"},
		{"TLS without the CA", func(_ *testing.T, c *filestore.S3Config) {
			c.Endpoint = tlsSrv.Endpoint
			keys(tlsSrv.Key)(t, c)
		}, "ca_file", "not trusted"},
		{"TLS with the CA", func(_ *testing.T, c *filestore.S3Config) {
			c.Endpoint, c.CAFile = tlsSrv.Endpoint, tlsSrv.CAFile
			keys(tlsSrv.Key)(t, c)
		}, "", ""},
		{"plain HTTP to a TLS server", func(_ *testing.T, c *filestore.S3Config) {
			c.Endpoint = strings.Replace(tlsSrv.Endpoint, "https://", "http://", 1)
			keys(tlsSrv.Key)(t, c)
		}, "endpoint", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s3Config(t, srv)
			tc.change(t, &cfg)
			s, err := filestore.NewS3(cfg)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = s.Probe(ctx)
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				if o := srv.Objects(t, ""); len(o) != 0 {
					t.Fatalf("the probe left %v", o)
				}
				return
			}
			var pe *filestore.ProbeError
			if !errors.As(err, &pe) || pe.Field != tc.field || !strings.Contains(pe.Message, tc.says) {
				t.Fatalf("want a ProbeError on %s saying %q, got %#v", tc.field, tc.says, err)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("the probe took %s: it must not retry", time.Since(start))
			}
			t.Log(pe.Message)
		})
	}
}

// TestS3Credentials: where keys come from, in order, and what is said
// when there are none.
func TestS3Credentials(t *testing.T) {
	ctx := context.Background()
	srv := testpeers.StartS3(t, testpeers.S3Options{})
	base := s3Config(t, srv)
	for _, v := range []string{filestore.EnvAccessKeyID, filestore.EnvSecretAccessKey, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		t.Setenv(v, "")
	}
	probe := func(cfg filestore.S3Config) error {
		s, err := filestore.NewS3(cfg)
		if err != nil {
			return err
		}
		return s.Probe(ctx)
	}
	var ce *filestore.ConfigError
	if err := probe(base); !errors.As(err, &ce) || ce.Field != "credentials_file" || !strings.Contains(ce.Message, "AWS_ACCESS_KEY_ID") {
		t.Fatalf("no credentials: %v", err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", srv.Key.ID)
	if err := probe(base); !errors.As(err, &ce) || !strings.Contains(ce.Message, "only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") {
		t.Fatalf("half the credentials: %v", err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.Key.Secret)
	if err := probe(base); err != nil {
		t.Fatalf("AWS_ variables: %v", err)
	}
	// KILN_S3_ variables come first
	t.Setenv(filestore.EnvAccessKeyID, srv.ReadOnlyKey.ID)
	t.Setenv(filestore.EnvSecretAccessKey, srv.ReadOnlyKey.Secret)
	if err := probe(base); err == nil || !strings.Contains(err.Error(), "KILN_S3_ACCESS_KEY_ID") {
		t.Fatalf("KILN_S3_ variables are not used first: %v", err)
	}
	// a credentials file comes before both, and is read again when it changes
	file := filepath.Join(t.TempDir(), "credentials")
	write := func(k testpeers.Key) {
		os.WriteFile(file, []byte("[default]\naws_access_key_id = nobody\naws_secret_access_key = x\n\n[kiln]\naws_access_key_id = "+
			k.ID+"\naws_secret_access_key = "+k.Secret+"\n"), 0o600)
	}
	write(srv.Key)
	cfg := base
	cfg.CredentialsFile, cfg.CredentialsProfile = file, "kiln"
	s, err := filestore.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Probe(ctx); err != nil {
		t.Fatalf("credentials file: %v", err)
	}
	write(srv.ReadOnlyKey)
	os.Chtimes(file, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	if err := s.Probe(ctx); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("a changed credentials file is not read again: %v", err)
	}
	for _, bad := range []struct{ content, says string }{
		{"", "has no [kiln] section"},
		{"[kiln]\naws_access_key_id = x\n", "needs aws_access_key_id and aws_secret_access_key"},
		{"[kiln]\ncredential_process = /bin/true\n", "needs aws_access_key_id"},
	} {
		os.WriteFile(file, []byte(bad.content), 0o600)
		if _, err := filestore.NewS3(cfg); !errors.As(err, &ce) || ce.Field != "credentials_file" || !strings.Contains(ce.Message, bad.says) {
			t.Errorf("%q: want an error saying %q, got %v", bad.content, bad.says, err)
		}
	}
	cfg.CredentialsFile = filepath.Join(t.TempDir(), "missing")
	if _, err := filestore.NewS3(cfg); !errors.As(err, &ce) || ce.Field != "credentials_file" {
		t.Errorf("missing file: %v", err)
	}
}

// TestS3PresignedDownloads: a presigned URL reads the content without
// credentials, as an attachment, until it expires.
func TestS3PresignedDownloads(t *testing.T) {
	ctx := context.Background()
	srv := testpeers.StartS3(t, testpeers.S3Options{})
	cfg := s3Config(t, srv)
	data := []byte("presigned\n")
	sha := sum(data)
	if u, err := newS3(t, cfg).DownloadURL(ctx, sha, "a.txt", "text/plain"); u != nil || err != nil {
		t.Fatalf("presigned downloads are off, got %v %v", u, err)
	}
	cfg.PresignedDownloads, cfg.PresignedExpiry = true, filestore.Duration(2*time.Second)
	s := newS3(t, cfg)
	if err := s.Put(ctx, sha, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	u, err := s.DownloadURL(ctx, sha, "a.txt", "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	if u.Query().Get("X-Amz-Expires") != "2" {
		t.Fatalf("expiry not applied: %s", u)
	}
	resp, err := http.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("presigned GET: %d %q", resp.StatusCode, body)
	}
	// a tampered URL is refused
	q := u.Query()
	q.Set("X-Amz-Expires", "3600")
	tampered := *u
	tampered.RawQuery = q.Encode()
	if resp, err := http.Get(tampered.String()); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("tampered URL: %v %v", resp.Status, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusForbidden {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the presigned URL still answers %d after its expiry", resp.StatusCode)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestOpenS3Backend: a file store's configuration opens an S3 backend;
// a bad one is refused naming the store and the key.
func TestOpenS3Backend(t *testing.T) {
	srv := testpeers.StartS3(t, testpeers.S3Options{})
	cfg := s3Config(t, srv)
	raw, _ := json.Marshal(cfg)
	b, err := filestore.Open(&model.FileStore{Name: "objects", Backend: model.BackendS3, Configuration: raw})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.(*filestore.S3); !ok {
		t.Fatalf("got %T", b)
	}
	if err := b.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = filestore.Open(&model.FileStore{Name: "objects", Backend: model.BackendS3, Configuration: json.RawMessage(`{"endpoint": "ftp://x", "bucket": "b"}`)})
	if err == nil || !strings.Contains(err.Error(), `"objects"`) || !strings.Contains(err.Error(), "endpoint") {
		t.Fatalf("want an error naming the store and endpoint, got %v", err)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestS3Faults: failures that pass are retried, one request at a time
// (an error answer, a connection cut in the middle of a part); failures
// that last fail the upload with an UnavailableError, leaving nothing.
func TestS3Faults(t *testing.T) {
	ctx := context.Background()
	srv := testpeers.StartS3(t, testpeers.S3Options{})
	proxy := testpeers.NewFaultProxy(t, srv.Endpoint)
	cfg := s3Config(t, srv)
	cfg.Endpoint, cfg.MaxAttempts = proxy.URL, 3
	s := newS3(t, cfg)
	data := randomBytes(2*filestore.MinPartSize + 10)
	sha := sum(data)
	for _, fault := range []testpeers.Fault{{Status: 503}, {Status: 500}, {CutAfter: 1 << 20}, {Down: true}} {
		t.Run(fmt.Sprintf("%+v", fault), func(t *testing.T) {
			// lasting: the upload fails, nothing stays (the abort goes
			// through once the fault ends)
			proxy.Set(fault)
			err := s.Put(ctx, sha, int64(len(data)), bytes.NewReader(data))
			var ue *filestore.UnavailableError
			if !errors.As(err, &ue) {
				t.Fatalf("want an UnavailableError, got %v", err)
			}
			proxy.Set(testpeers.Fault{})
			if o := srv.Objects(t, "store/"); len(o) != 0 {
				t.Fatalf("objects after a failed upload: %v", o)
			}
			for _, u := range srv.Uploads(t, "store/") { // the abort met the fault too
				srv.Abort(t, u)
			}
			// passing: the fault ends after the first failed request
			proxy.Set(fault)
			before := proxy.Connections.Load()
			done := make(chan error, 1)
			go func() { done <- s.Put(ctx, sha, int64(len(data)), bytes.NewReader(data)) }()
			for proxy.Connections.Load() < before+1 {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond)
			proxy.Set(testpeers.Fault{})
			if err := <-done; err != nil {
				t.Fatalf("a passing fault was not retried: %v", err)
			}
			if err := s.Delete(ctx, sha); err != nil {
				t.Fatal(err)
			}
			nothingLeft(t, srv)
		})
	}
}
