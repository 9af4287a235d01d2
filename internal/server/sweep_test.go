package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
