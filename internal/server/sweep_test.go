package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/filestore"
	"github.com/kiln-build/kiln/internal/testdb"
	"github.com/kiln-build/kiln/internal/testpeers"
)

// TestServerSweepsCutUploads is defect 2 of issue 13 on a running server:
// an artifact whose upload was cut stays incomplete (download 409) only
// for the grace period, then the server removes it by itself; complete
// artifacts stay. (What the cut upload left in the file store is the blobs
// sweeper's, tested in package blobs.)
func TestServerSweepsCutUploads(t *testing.T) {
	const token = "kiln_sweep_test_admin_token"
	dataDir := filepath.Join(t.TempDir(), "data")
	r := start(t, Config{BootstrapToken: token, DataDir: dataDir,
		IncompleteArtifactGrace: 2 * time.Second, SweepInterval: 100 * time.Millisecond})
	mustPost(t, r.API+"/api/1.0/scopes/", token, `{"name": "debian"}`)
	mustPost(t, r.API+"/api/1.0/workspaces/", token, `{"name": "main", "scope": "debian", "public": true}`)
	content := "complete content"
	sum := sha256.Sum256([]byte(content))
	cut := mustPost(t, r.API+"/api/1.0/artifacts/", token, fmt.Sprintf(`{"category": "test:x", "workspace": "debian/main",
		"files": [{"path": "big", "sha256": %q, "size": 400000000}]}`, strings.Repeat("ab", 32)))
	if code, _ := request(t, http.MethodGet, fmt.Sprintf("%s/api/1.0/artifacts/%d/files/big", r.API, cut), asAdmin(token), ""); code != http.StatusConflict {
		t.Fatalf("download of the cut upload: %d, want 409", code)
	}
	done := mustPost(t, r.API+"/api/1.0/artifacts/", token, fmt.Sprintf(`{"category": "test:x", "workspace": "debian/main",
		"files": [{"path": "f", "sha256": %q, "size": %d}]}`, hex.EncodeToString(sum[:]), len(content)))
	h := asAdmin(token)
	h["Content-Type"] = "application/octet-stream"
	if code, body := request(t, http.MethodPut, fmt.Sprintf("%s/api/1.0/artifacts/%d/files/f", r.API, done), h, content); code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "the server to remove the incomplete artifact", func() bool {
		code, _ := request(t, http.MethodGet, fmt.Sprintf("%s/api/1.0/artifacts/%d/", r.API, cut), asAdmin(token), "")
		return code == http.StatusNotFound
	})
	if code, body := request(t, http.MethodGet, fmt.Sprintf("%s/api/1.0/artifacts/%d/files/f", r.API, done), asAdmin(token), ""); code != 200 || body != content {
		t.Errorf("the complete artifact: %d %q", code, body)
	}
	if !strings.Contains(r.log.String(), "removed incomplete artifacts") {
		t.Errorf("the sweep is not logged:\n%s", r.log.String())
	}
}

// TestReplicasSweepCutUploadsOnce: two replicas on one PostgreSQL
// database and one S3 bucket both remove incomplete artifacts, every
// 50 ms. Each artifact was cut after its first file, whose content it
// shares with another artifact, uploaded through the other replica. Once
// the grace has passed every artifact goes, the file store's total_size
// comes back to 0, and each object leaves the bucket with exactly one
// DELETE (counted by a proxy in front of the S3 server): the replicas
// decide in the database which of them releases the content and deletes
// its bytes, never twice and never not at all.
func TestReplicasSweepCutUploadsOnce(t *testing.T) {
	const token = "kiln_sweep_replicas_admin_token"
	dsn := testdb.Postgres(t)
	s3 := testpeers.StartS3(t, testpeers.S3Options{})
	t.Setenv(filestore.EnvAccessKeyID, s3.Key.ID)
	t.Setenv(filestore.EnvSecretAccessKey, s3.Key.Secret)
	var mu sync.Mutex
	deletes := map[string]int{} // object key → DELETE requests
	target, err := url.Parse(s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host // what the client signed
		key := strings.TrimPrefix(r.In.URL.Path, "/"+s3.Bucket+"/")
		probe := strings.HasPrefix(key, "kiln/.kiln-probe-") // the store's validation writes and deletes one
		if (r.In.Method == http.MethodDelete || r.In.URL.Query().Has("delete")) && !probe {
			mu.Lock()
			deletes[key]++
			mu.Unlock()
		}
	}})
	t.Cleanup(proxy.Close)

	cfg := Config{Database: dsn, BootstrapToken: token, IncompleteArtifactGrace: 2 * time.Second, SweepInterval: 50 * time.Millisecond}
	rs := []*running{start(t, cfg), start(t, cfg)}
	api := rs[0].API + "/api/1.0/"
	mustPost(t, api+"scopes/", token, `{"name": "debian"}`)
	mustPost(t, api+"workspaces/", token, `{"name": "main", "scope": "debian", "public": true}`)
	mustPost(t, api+"file-stores/", token, fmt.Sprintf(`{"name": "objects", "backend": "S3", "default": true,
		"configuration": {"endpoint": %q, "bucket": %q, "region": %q, "prefix": "kiln/"}}`, proxy.URL, s3.Bucket, s3.Region))
	const pairs = 6
	var arts []int64
	for i := range 2 * pairs {
		content := fmt.Sprintf("content shared by the artifacts of pair %d", i/2)
		sum := sha256.Sum256([]byte(content))
		id := mustPost(t, api+"artifacts/", token, fmt.Sprintf(`{"category": "test:x", "workspace": "debian/main",
			"files": [{"path": "done", "sha256": %q, "size": %d}, {"path": "cut", "sha256": %q, "size": 400000000}]}`,
			hex.EncodeToString(sum[:]), len(content), strings.Repeat("ab", 32)))
		h := asAdmin(token)
		h["Content-Type"] = "application/octet-stream"
		if code, body := request(t, http.MethodPut, fmt.Sprintf("%s/api/1.0/artifacts/%d/files/done", rs[i%2].API, id), h, content); code != 201 {
			t.Fatalf("upload: %d %s", code, body)
		}
		arts = append(arts, id)
	}
	if n := len(s3.Objects(t, "kiln/")); n != pairs {
		t.Fatalf("%d objects in the bucket, want one per pair, %d", n, pairs)
	}
	waitFor(t, 20*time.Second, "both replicas to remove every incomplete artifact", func() bool {
		for _, id := range arts {
			if code, _ := request(t, http.MethodGet, fmt.Sprintf("%s/api/1.0/artifacts/%d/", rs[1].API, id), asAdmin(token), ""); code != http.StatusNotFound {
				return false
			}
		}
		return true
	})
	waitFor(t, 10*time.Second, "the bucket to be empty", func() bool { return len(s3.Objects(t, "kiln/")) == 0 })
	time.Sleep(200 * time.Millisecond) // a few more sweeps of both replicas
	mu.Lock()
	defer mu.Unlock()
	if len(deletes) != pairs {
		t.Errorf("DELETE requests for %d objects, want %d: %v", len(deletes), pairs, deletes)
	}
	for key, n := range deletes {
		if n != 1 {
			t.Errorf("object %s was deleted %d times, want once", key, n)
		}
	}
	var fs struct {
		TotalSize int64 `json:"total_size"`
	}
	_, body := request(t, http.MethodGet, api+"file-stores/?name=objects", asAdmin(token), "")
	var page struct {
		Results []json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal([]byte(body), &page); err != nil || len(page.Results) != 1 {
		t.Fatalf("file stores: %v %s", err, body)
	}
	if err := json.Unmarshal(page.Results[0], &fs); err != nil || fs.TotalSize != 0 {
		t.Errorf("the S3 store's total_size is %d after every artifact went, want 0 (%v)", fs.TotalSize, err)
	}
}
