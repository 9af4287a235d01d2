package cli_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testpeers"
)

// TestS3FileStoreEndToEnd runs a farm on an S3 file store with the real
// binaries: the store is created and checked with `kiln file-store`, a
// runner's outputs go to the bucket (multipart for the big one) and come
// back through `kiln artifact download` by presigned URLs; then a server
// is killed with SIGKILL in the middle of an upload: nothing shows and
// nothing is counted after its restart, `kiln expire` sweeps what the
// upload left in the bucket, and the upload succeeds when retried.
func TestS3FileStoreEndToEnd(t *testing.T) {
	// the S3 server's clock runs an hour behind: what a killed upload
	// leaves looks abandoned at once to a sweep with abandoned_upload_age 1m
	s3 := testpeers.StartS3(t, testpeers.S3Options{ClockOffset: -time.Hour})
	keys := []string{"KILN_S3_ACCESS_KEY_ID=" + s3.Key.ID, "KILN_S3_SECRET_ACCESS_KEY=" + s3.Key.Secret}
	dataDir := filepath.Join(t.TempDir(), "kiln-data")
	srv := startServer(t, cleanEnv(t, keys...), "--data-dir", dataDir)
	admin := readAdminToken(t, dataDir)
	as := append(cleanEnv(t), "KILN_SERVER="+srv.url, "KILN_TOKEN="+admin)

	// validation, through the CLI: the server says what is wrong
	r := fails(t, as, 1, "configuration.bucket", "file-store", "create", "objects", "--backend", "s3",
		"--endpoint", s3.Endpoint, "--bucket", "nobucket", "--region", s3.Region, "--path-style")
	if !strings.Contains(r.stderr, `bucket "nobucket" does not exist`) {
		t.Errorf("unclear: %s", r.stderr)
	}
	fails(t, as, 2, "does not apply to a S3 file store", "file-store", "create", "objects", "--backend", "s3",
		"--endpoint", s3.Endpoint, "--bucket", "kiln", "--base-directory", "/tmp")
	ok(t, as, "file-store", "create", "objects", "--backend", "s3", "--endpoint", s3.Endpoint, "--bucket", s3.Bucket,
		"--region", s3.Region, "--prefix", "farm/", "--path-style", "--presigned-downloads", "--default")
	// part_size and abandoned_upload_age have no flag of their own
	conf := fmt.Sprintf(`{"endpoint": %q, "bucket": %q, "region": %q, "prefix": "farm/", "path_style": true,
		"presigned_downloads": true, "part_size": 5242880, "abandoned_upload_age": "1m"}`, s3.Endpoint, s3.Bucket, s3.Region)
	ok(t, as, "file-store", "update", "objects", "--configuration", conf)
	stores := byColumn(rows(t, ok(t, as, "file-store", "list").stdout), "NAME")
	if stores["objects"]["DEFAULT"] != "yes" || stores["default"]["DEFAULT"] != "no" {
		t.Fatalf("file stores: %v", stores)
	}

	// a runner's outputs land in the bucket and download through it
	ok(t, as, "scope", "create", "demo")
	ok(t, as, "workspace", "create", "main", "--scope", "demo", "--public")
	startRunner(t, as, srv.url, runtime.GOARCH)
	ok(t, as, "work", "submit", "command", "--workspace", "demo/main", "--wait",
		"--script", "head -c 7000000 /dev/urandom > big.bin; echo hello > small.txt",
		"--artifact", "big.bin", "--artifact", "small.txt")
	out := t.TempDir()
	downloaded := 0
	for _, a := range rows(t, ok(t, as, "artifact", "list", "--work-request", "1").stdout) {
		if a["CATEGORY"] != "kiln:work-request-debug-logs" {
			ok(t, as, "artifact", "download", a["ID"], "--dir", out) // checks each sha256
			downloaded++
		}
	}
	if downloaded != 2 {
		t.Fatalf("%d output artifacts", downloaded)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "small.txt")); string(b) != "hello\n" {
		t.Fatalf("small.txt: %q", b)
	}
	if fi, err := os.Stat(filepath.Join(out, "big.bin")); err != nil || fi.Size() != 7000000 {
		t.Fatalf("big.bin: %v", err)
	}
	objects := len(s3.Objects(t, "farm/"))
	if objects < 3 || len(s3.Uploads(t, "farm/")) != 0 {
		t.Fatalf("bucket: %v, unfinished %v", s3.Objects(t, "farm/"), s3.Uploads(t, "farm/"))
	}
	total := storeTotal(t, srv.url, admin)

	// SIGKILL in the middle of a multipart upload
	const size = 12 << 20
	content := make([]byte, size)
	rand.NewChaCha8([32]byte{7}).Read(content)
	h := sha256.Sum256(content)
	sum := hex.EncodeToString(h[:])
	art := apiJSON(t, srv.url, admin, "POST", "/api/1.0/artifacts/", map[string]any{"category": "test:file",
		"workspace": "demo/main", "files": []map[string]any{{"path": "big.iso", "sha256": sum, "size": size}}}, 201)
	upload := fmt.Sprintf("/api/1.0/artifacts/%d/files/big.iso", int64(art["id"].(float64)))
	pr, pw := io.Pipe()
	go func() {
		req, _ := http.NewRequest("PUT", srv.url+upload, pr)
		req.ContentLength = size
		req.Header.Set("Authorization", "Token "+admin)
		req.Header.Set("Content-Type", "application/octet-stream")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write(content[:8<<20]) // read by the server: a multipart upload is under way
	waitUntil(t, "the multipart upload to start", func() bool { return len(s3.Uploads(t, "farm/")) == 1 },
		func() string { return fmt.Sprint(s3.Uploads(t, "farm/")) })
	srv.cmd.Process.Kill()
	srv.kill(t)
	pw.CloseWithError(io.ErrClosedPipe)

	srv = startServer(t, cleanEnv(t, keys...), "--data-dir", dataDir)
	if n := len(s3.Objects(t, "farm/")); n != objects {
		t.Fatalf("%d objects after the kill, %d before", n, objects)
	}
	if got := storeTotal(t, srv.url, admin); got != total {
		t.Fatalf("total_size %d after the kill, %d before", got, total)
	}
	if u := s3.Uploads(t, "farm/"); len(u) != 1 {
		t.Fatalf("unfinished uploads after the kill: %v", u)
	}
	r = ok(t, cleanEnv(t, keys...), "expire", "--data-dir", dataDir)
	if !strings.Contains(r.stdout, "removed 1 abandoned uploads") || len(s3.Uploads(t, "farm/")) != 0 {
		t.Fatalf("expire did not sweep: %s; left %v", r, s3.Uploads(t, "farm/"))
	}
	apiCall(t, srv.url, admin, "PUT", upload, "application/octet-stream", content, 201)
	if got := storeTotal(t, srv.url, admin); got != total+size {
		t.Fatalf("total_size %d after the retry, want %d", got, total+size)
	}
}

// storeTotal reads the total_size of the file store "objects".
func storeTotal(t *testing.T, url, admin string) int64 {
	t.Helper()
	m := apiJSON(t, url, admin, "GET", "/api/1.0/file-stores/?name=objects", nil, 200)
	res := m["results"].([]any)
	if len(res) != 1 {
		t.Fatalf("file stores: %v", m)
	}
	return int64(res[0].(map[string]any)["total_size"].(float64))
}
