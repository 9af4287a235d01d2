package cli_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExpireRemovesCutUploads: `kiln expire` removes, besides expired
// artifacts, those whose upload was cut longer than --incomplete-grace
// ago, with the content they had uploaded, and the totals still recount
// clean (issue 13, defect 2).
func TestExpireRemovesCutUploads(t *testing.T) {
	srv := startServer(t, cleanEnv(t))
	admin := readAdminToken(t, srv.dataDir)
	apiJSON(t, srv.url, admin, "POST", "/api/1.0/scopes/", map[string]any{"name": "e2e"}, 201)
	apiJSON(t, srv.url, admin, "POST", "/api/1.0/workspaces/", map[string]any{"name": "main", "scope": "e2e", "public": true}, 201)
	done := "the first file made it"
	sum := sha256.Sum256([]byte(done))
	sha := hex.EncodeToString(sum[:])
	art := apiJSON(t, srv.url, admin, "POST", "/api/1.0/artifacts/", map[string]any{"category": "test:file", "workspace": "e2e/main",
		"files": []map[string]any{{"path": "a", "sha256": sha, "size": len(done)},
			{"path": "b", "sha256": strings.Repeat("cd", 32), "size": 400 << 20}}}, 201)
	id := int64(art["id"].(float64))
	apiCall(t, srv.url, admin, "PUT", fmt.Sprintf("/api/1.0/artifacts/%d/files/a", id), "application/octet-stream", []byte(done), 201)
	blob := filepath.Join(srv.dataDir, "files", sha[0:2], sha[2:4], sha)
	if _, err := os.Stat(blob); err != nil {
		t.Fatalf("the file store layout changed; this test looks for content at %s: %v", blob, err)
	}
	env := cleanEnv(t)

	// within the grace period nothing goes
	r := kilnTimeout(t, 60*time.Second, env, "expire", "--data-dir", srv.dataDir)
	if r.code != 0 || !strings.Contains(r.stdout, "removed 0 incomplete artifacts") {
		t.Fatalf("kiln expire: %s", r)
	}
	apiCall(t, srv.url, admin, "GET", fmt.Sprintf("/api/1.0/artifacts/%d/", id), "", nil, 200)

	time.Sleep(10 * time.Millisecond) // created_at is now in the past
	if r := kilnTimeout(t, 60*time.Second, env, "expire", "--data-dir", srv.dataDir, "--incomplete-grace", "1ms", "--dry-run"); r.code != 0 ||
		!strings.Contains(r.stdout, "1 incomplete artifacts") {
		t.Fatalf("kiln expire --dry-run: %s", r)
	}
	r = kilnTimeout(t, 60*time.Second, env, "expire", "--data-dir", srv.dataDir, "--incomplete-grace", "1ms")
	if r.code != 0 || !strings.Contains(r.stdout, "removed 1 incomplete artifacts") || !strings.Contains(r.stdout, "deleted 1 unused files") {
		t.Fatalf("kiln expire: %s", r)
	}
	apiCall(t, srv.url, admin, "GET", fmt.Sprintf("/api/1.0/artifacts/%d/", id), "", nil, 404)
	if _, err := os.Stat(blob); !os.IsNotExist(err) {
		t.Errorf("the uploaded content of the removed artifact is still in the file store: %v", err)
	}
	if r := kilnTimeout(t, 60*time.Second, env, "metrics", "recount", "--data-dir", srv.dataDir); r.code != 0 {
		t.Fatalf("recount after expire: %s", r)
	}
}
