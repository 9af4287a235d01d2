package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPublicMetricsScopeRestriction checks the wiring of the public
// endpoint: anonymous scrapes see every scope, a scope-restricted token
// sees only its scope, a bad token is refused, and no cache hides the
// difference between them.
func TestPublicMetricsScopeRestriction(t *testing.T) {
	const admin = "kiln_scope_restriction_admin"
	srv := start(t, Config{BootstrapToken: admin, MetricsCacheTTL: 30 * time.Second})
	call := func(method, path, token, body string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, srv.API+"/api/1.0/"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Token "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, out)
		}
		return out
	}
	for _, s := range []string{"debian", "ubuntu"} {
		call("POST", "scopes/", admin, `{"name": "`+s+`"}`)
		call("POST", "workspaces/", admin, `{"name": "main", "scope": "`+s+`", "public": true}`)
	}
	tok := call("POST", "tokens/", admin, `{"scope": "ubuntu", "comment": "metrics"}`)
	secret, _ := tok["secret"].(string)

	_, all := get(t, srv.API+"/api/1.0/open-metrics/", "")
	for _, want := range []string{`workspaces{expires="0",private="0",scope="debian"} 1`, `workspaces{expires="0",private="0",scope="ubuntu"} 1`} {
		if !strings.Contains(all, want) {
			t.Fatalf("anonymous scrape lacks %s:\n%s", want, all)
		}
	}
	code, restricted := get(t, srv.API+"/api/1.0/open-metrics/", secret)
	if code != http.StatusOK || strings.Contains(restricted, `scope="debian"`) || !strings.Contains(restricted, `scope="ubuntu"`) {
		t.Fatalf("restricted scrape (%d) shows other scopes or not its own:\n%s", code, restricted)
	}
	if !strings.Contains(restricted, "file_store_size{") {
		t.Fatalf("restricted scrape lost the scope-less families:\n%s", restricted)
	}
	if code, _ := get(t, srv.API+"/api/1.0/open-metrics/", "kiln_not_a_token"); code != http.StatusUnauthorized {
		t.Fatalf("bad token answered %d, want 401", code)
	}
	if code, body := get(t, srv.API+"/api/1.0/service-status/", secret); code != http.StatusOK || strings.Contains(body, "debian") {
		t.Fatalf("service status for a restricted token (%d): %s", code, body)
	}
}
