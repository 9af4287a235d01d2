package api_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/filestore"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
	"github.com/kiln-build/kiln/internal/testpeers"
)

// The file store tests of this package run on both backends: a Local
// directory, and an S3 bucket of the test S3 server (its own process),
// reached through a fault proxy that tests may switch.

var backends = []model.FileStoreBackend{model.BackendLocal, model.BackendS3}

// eachBackend runs fn once per backend, as subtests named after them.
func eachBackend(t *testing.T, fn func(t *testing.T, backend model.FileStoreBackend)) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) { fn(t, b) })
	}
}

// storeUnderTest is the default file store of an env, with a view of
// what its backend holds.
type storeUnderTest struct {
	fs    *model.FileStore
	root  string                // Local: the directory
	s3    *testpeers.S3         // S3: the server
	proxy *testpeers.FaultProxy // S3: in front of the server
}

// s3Prefix is the prefix of the S3 stores of these tests.
const s3Prefix = "kiln/"

// useStore makes a store of this backend the env's default file store:
// the bootstrap one for Local; for S3 a bucket of a fresh test server,
// created through the API (so that validation runs), with the server's
// keys in the environment as an operator would set them.
func (e *env) useStore(t *testing.T, backend model.FileStoreBackend) *storeUnderTest {
	t.Helper()
	ctx := context.Background()
	if backend == model.BackendLocal {
		fs, err := e.st.DefaultFileStore(ctx)
		e.must(err)
		c, err := filestore.ParseLocalConfig(fs.Configuration)
		e.must(err)
		return &storeUnderTest{fs: fs, root: c.BaseDirectory}
	}
	return e.useS3(t, testpeers.S3Options{}, nil)
}

// useS3 makes an S3 bucket the default file store: a fresh test server
// started with o, reached through a fault proxy, configured with small
// parts and few attempts, and with the keys of extra.
func (e *env) useS3(t *testing.T, o testpeers.S3Options, extra map[string]any) *storeUnderTest {
	t.Helper()
	ctx := context.Background()
	srv := testpeers.StartS3(t, o)
	proxy := testpeers.NewFaultProxy(t, srv.Endpoint)
	t.Setenv(filestore.EnvAccessKeyID, srv.Key.ID)
	t.Setenv(filestore.EnvSecretAccessKey, srv.Key.Secret)
	conf := map[string]any{"endpoint": proxy.URL, "bucket": srv.Bucket, "region": srv.Region,
		"prefix": s3Prefix, "part_size": filestore.MinPartSize, "max_attempts": 2}
	for k, v := range extra {
		conf[k] = v
	}
	created := e.do("POST", "/api/1.0/file-stores/", adminSecret, map[string]any{
		"name": "objects", "backend": "S3", "default": true, "configuration": conf,
	}).want(t, 201).obj(t)
	fs, err := e.st.FileStores().Get(ctx, id(created), nil)
	e.must(err)
	if !fs.Default {
		t.Fatal("the new store is not the default")
	}
	return &storeUnderTest{fs: fs, s3: srv, proxy: proxy}
}

// stored counts what the backend holds: content and anything an upload
// left behind (Local temporary files, S3 unfinished multipart uploads).
func (s *storeUnderTest) stored(t *testing.T) int {
	t.Helper()
	if s.s3 != nil {
		return len(s.s3.Objects(t, s3Prefix)) + len(s.s3.Uploads(t, s3Prefix))
	}
	n := 0
	filepath.WalkDir(s.root, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// totalSize reads the store's total_size.
func (s *storeUnderTest) totalSize(t *testing.T, e *env) int64 {
	t.Helper()
	fs, err := e.st.FileStores().Get(context.Background(), s.fs.ID, nil)
	e.must(err)
	return fs.TotalSize
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestFileStoreValidation: a new or changed S3 configuration is checked
// against the bucket before it is saved, and every failure names the key
// to fix and says what is wrong; nothing is saved.
func TestFileStoreValidation(t *testing.T) {
	e := newEnv(t, testdb.SQLite(t))
	srv := testpeers.StartS3(t, testpeers.S3Options{})
	tlsSrv := testpeers.StartS3(t, testpeers.S3Options{TLS: true})
	proxy := testpeers.NewFaultProxy(t, srv.Endpoint)
	t.Setenv(filestore.EnvAccessKeyID, srv.Key.ID)
	t.Setenv(filestore.EnvSecretAccessKey, srv.Key.Secret)
	conf := func(change map[string]any) map[string]any {
		c := map[string]any{"endpoint": srv.Endpoint, "bucket": srv.Bucket, "region": srv.Region}
		for k, v := range change {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return map[string]any{"name": "objects", "backend": "S3", "configuration": c}
	}
	before := e.snapshot(t)
	proxy.Set(testpeers.Fault{Down: true})
	for _, tc := range []struct {
		name   string
		body   map[string]any
		status int
		field  string
		says   string
	}{
		{"unreachable", conf(map[string]any{"endpoint": proxy.URL}), 422, "configuration.endpoint", "could not write a test object"},
		{"no such bucket", conf(map[string]any{"bucket": "nobucket"}), 422, "configuration.bucket", `bucket "nobucket" does not exist`},
		{"wrong region", conf(map[string]any{"region": "ap-south-1"}), 422, "configuration.region", "wrong region"},
		{"TLS without the CA", conf(map[string]any{"endpoint": tlsSrv.Endpoint}), 422, "configuration.ca_file", "not trusted"},
		{"CA file unreadable", conf(map[string]any{"endpoint": tlsSrv.Endpoint, "ca_file": "/nonexistent/ca.pem"}), 422, "configuration.ca_file", "cannot read"},
		{"credentials file missing", conf(map[string]any{"credentials_file": "/nonexistent/creds"}), 422, "configuration.credentials_file", "cannot read"},
		{"a secret in the body", conf(map[string]any{"aws_secret_access_key": "x"}), 400, "configuration.aws_secret_access_key", "KILN_S3_SECRET_ACCESS_KEY"},
		{"an unknown key", conf(map[string]any{"regoin": "x"}), 400, "configuration.regoin", "unknown key"},
		{"no endpoint", conf(map[string]any{"endpoint": nil}), 400, "configuration.endpoint", "needs an endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := e.do("POST", "/api/1.0/file-stores/", adminSecret, tc.body).wantProblem(t, tc.status, tc.field)
			if !strings.Contains(p.Detail, tc.says) {
				t.Fatalf("detail %q does not say %q", p.Detail, tc.says)
			}
		})
	}
	t.Run("read-only keys", func(t *testing.T) {
		t.Setenv(filestore.EnvAccessKeyID, srv.ReadOnlyKey.ID)
		t.Setenv(filestore.EnvSecretAccessKey, srv.ReadOnlyKey.Secret)
		p := e.do("POST", "/api/1.0/file-stores/", adminSecret, conf(nil)).wantProblem(t, 422, "configuration.credentials_file")
		if !strings.Contains(p.Detail, "access denied") || !strings.Contains(p.Detail, filestore.EnvAccessKeyID) {
			t.Fatalf("detail %q", p.Detail)
		}
	})
	if after := e.snapshot(t); !jsonEqual(before, after) {
		t.Fatal("a refused file store changed something")
	}
	if o := srv.Objects(t, ""); len(o) != 0 {
		t.Fatalf("probes left %v", o)
	}

	// a good one is saved, in its canonical form, and shown as saved
	c := conf(map[string]any{"endpoint": tlsSrv.Endpoint, "ca_file": tlsSrv.CAFile, "presigned_downloads": true})
	t.Setenv(filestore.EnvAccessKeyID, tlsSrv.Key.ID)
	t.Setenv(filestore.EnvSecretAccessKey, tlsSrv.Key.Secret)
	created := e.do("POST", "/api/1.0/file-stores/", adminSecret, c).want(t, 201).obj(t)
	shown := e.do("GET", "/api/1.0/file-stores/"+itoa(id(created))+"/", adminSecret, nil).want(t, 200).obj(t)
	if got := shown["configuration"].(map[string]any); got["ca_file"] != tlsSrv.CAFile || got["presigned_downloads"] != true || shown["default"] != false {
		t.Fatalf("shown: %v", shown)
	}
	// a change of configuration is checked again
	item := "/api/1.0/file-stores/" + itoa(id(created)) + "/"
	e.do("PATCH", item, adminSecret, map[string]any{"configuration": map[string]any{"endpoint": tlsSrv.Endpoint, "bucket": "other"}}).
		wantProblem(t, 422, "configuration.ca_file")
	e.do("PATCH", item, adminSecret, map[string]any{"max_size": 10}).want(t, 200) // no probe needed
	// making it the default takes the default from the bootstrap store
	e.do("PATCH", item, adminSecret, map[string]any{"default": true}).want(t, 200)
	list, _ := e.do("GET", "/api/1.0/file-stores/?limit=100", adminSecret, nil).want(t, 200).list(t)
	defaults := 0
	for _, f := range list {
		if f["default"] == true {
			defaults++
			if id(f) != id(created) {
				t.Fatalf("default is %v", f["name"])
			}
		}
	}
	if defaults != 1 {
		t.Fatalf("%d default stores", defaults)
	}
	e.do("PATCH", item, adminSecret, map[string]any{"default": false}).wantProblem(t, 400, "default")
}

// TestFileStoreRedaction: a configuration that an older kiln saved with
// secrets in it is shown with the secrets masked.
func TestFileStoreRedaction(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, testdb.SQLite(t))
	legacy := &model.FileStore{Name: "legacy", Backend: model.BackendS3, Configuration: json.RawMessage(
		`{"endpoint": "https://AKIAOLD:oldsecret@s3.example.org", "bucket": "b", "secret_key": "hunter2", "access_key": "AKIAOLD"}`)}
	e.must(e.st.FileStores().Create(ctx, legacy))
	for _, p := range []string{"/api/1.0/file-stores/", "/api/1.0/file-stores/" + itoa(legacy.ID) + "/"} {
		body := string(e.do("GET", p, adminSecret, nil).want(t, 200).body)
		for _, secret := range []string{"hunter2", "oldsecret", "AKIAOLD"} {
			if strings.Contains(body, secret) {
				t.Fatalf("GET %s shows %q: %s", p, secret, body)
			}
		}
		if !strings.Contains(body, "REDACTED") || !strings.Contains(body, "s3.example.org") {
			t.Fatalf("GET %s: %s", p, body)
		}
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
