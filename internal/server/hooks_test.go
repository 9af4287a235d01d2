package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/api"
)

// TestWebhooksStartWork sends webhooks to a running server over HTTP:
// authenticated by token or by signature, they start work requests and
// workflows as their user, with that user's permissions; everything else
// is refused or ignored, and every event is counted by source, type and
// outcome.
func TestWebhooksStartWork(t *testing.T) {
	const (
		token  = "kiln_webhook_test_admin_token"
		secret = "kiln-webhook-test-secret-0123"
	)
	r := start(t, Config{MetricsServer: "127.0.0.1:0", BootstrapToken: token, WebhookSecret: secret, WebhookUser: "ci"})
	mustPost(t, r.API+"/api/1.0/scopes/", token, `{"name": "debian"}`)
	ws := mustPost(t, r.API+"/api/1.0/workspaces/", token, `{"name": "main", "scope": "debian", "public": true}`)
	mustPost(t, r.API+"/api/1.0/workflow-templates/", token, `{"name": "build", "workspace": "debian/main", "kind": "sequence",
		"steps": [{"name": "build", "task_type": "Worker", "task_name": "noop",
			"task_data": {"host_architecture": "riscv64", "ref": "{{params.branch}}", "commit": "{{params.commit}}"}}]}`)

	hook := func(source, query, event string, header map[string]string, body string) (int, string) {
		t.Helper()
		h := map[string]string{"Content-Type": "application/json"}
		if event != "" {
			h[map[string]string{"kiln": "X-Kiln-Event", "github": "X-GitHub-Event", "gitlab": "X-Gitlab-Event"}[source]] = event
		}
		for k, v := range header {
			h[k] = v
		}
		u := r.API + "/api/1.0/hooks/" + source + "/"
		if query != "" {
			u += "?" + query
		}
		return request(t, http.MethodPost, u, h, body)
	}
	signed := func(header string, body string) map[string]string {
		return map[string]string{header: api.Sign(secret, []byte(body))}
	}
	workRequest := `{"work_request": {"task_type": "Worker", "task_name": "noop", "workspace": "debian/main",
		"task_data": {"host_architecture": "riscv64"}}}`

	// A token: the event acts as the token's user (here the admin).
	code, body := hook("kiln", "", "push", map[string]string{"Authorization": "Token " + token}, workRequest)
	if code != http.StatusCreated {
		t.Fatalf("push with a token: %d %s", code, body)
	}
	var wr struct {
		ID        int64  `json:"id"`
		Status    string `json:"status"`
		TaskName  string `json:"task_name"`
		CreatedBy int64  `json:"created_by"`
	}
	json.Unmarshal([]byte(body), &wr)
	if wr.ID == 0 || wr.Status != "pending" || wr.TaskName != "noop" {
		t.Errorf("push with a token answered %s", body)
	}

	// A signature: the event acts as --webhook-user, which must exist and
	// may only do what that user may do.
	if code, body := hook("kiln", "", "push", signed("X-Kiln-Signature-256", workRequest), workRequest); code != http.StatusForbidden {
		t.Errorf("signed push before the webhook user exists: %d %s", code, body)
	}
	mustPost(t, r.API+"/api/1.0/users/", token, `{"username": "ci"}`)
	if code, body := hook("kiln", "", "push", signed("X-Kiln-Signature-256", workRequest), workRequest); code != http.StatusForbidden {
		t.Errorf("signed push by a user who is no contributor: %d %s", code, body)
	}
	mustPost(t, fmt.Sprintf("%s/api/1.0/workspaces/%d/members/", r.API, ws), token, `{"user": "ci", "role": "contributor"}`)
	code, body = hook("kiln", "", "push", signed("X-Kiln-Signature-256", workRequest), workRequest)
	if code != http.StatusCreated {
		t.Fatalf("signed push by a contributor: %d %s", code, body)
	}
	var byCI struct {
		ID        int64 `json:"id"`
		CreatedBy int64 `json:"created_by"`
	}
	json.Unmarshal([]byte(body), &byCI)
	if byCI.CreatedBy == 0 || byCI.CreatedBy == wr.CreatedBy {
		t.Errorf("the signed push was not created by the webhook user: %s", body)
	}

	// A kiln push that starts a workflow from a template.
	wf := `{"workflow": {"template": "build", "workspace": "debian/main", "parameters": {"branch": "main", "commit": "abc"}}}`
	if code, body := hook("kiln", "", "push", signed("X-Kiln-Signature-256", wf), wf); code != http.StatusCreated || !strings.Contains(body, `"task_type":"Workflow"`) {
		t.Errorf("signed push starting a workflow: %d %s", code, body)
	}

	// GitHub: the template is in the hook's URL, the push fills in the
	// parameters.
	push := `{"ref": "refs/heads/release-1", "after": "0123abcd", "repository": {"full_name": "kiln-build/kiln"}}`
	q := url.Values{"template": {"build"}, "workspace": {"debian/main"}, "param.branch": {"{branch}"}, "param.commit": {"{commit}"}}.Encode()
	code, body = hook("github", q, "push", signed("X-Hub-Signature-256", push), push)
	if code != http.StatusCreated {
		t.Fatalf("GitHub push: %d %s", code, body)
	}
	var started struct {
		Children []struct {
			Data map[string]any `json:"task_data"`
		} `json:"children"`
	}
	json.Unmarshal([]byte(body), &started)
	if len(started.Children) != 1 || started.Children[0].Data["ref"] != "release-1" || started.Children[0].Data["commit"] != "0123abcd" {
		t.Errorf("the GitHub push did not fill in the parameters: %s", body)
	}
	if code, _ := hook("github", q, "ping", signed("X-Hub-Signature-256", `{"zen": "hi"}`), `{"zen": "hi"}`); code != http.StatusOK {
		t.Errorf("GitHub ping: %d", code)
	}
	deleted := `{"ref": "refs/heads/old", "deleted": true}`
	if code, body := hook("github", q, "push", signed("X-Hub-Signature-256", deleted), deleted); code != http.StatusOK || !strings.Contains(body, "ignored") {
		t.Errorf("GitHub push deleting a branch: %d %s", code, body)
	}

	// Refusals.
	for _, c := range []struct {
		name, source, event string
		header              map[string]string
		body                string
		want                int
	}{
		{"no authentication", "kiln", "push", nil, workRequest, http.StatusUnauthorized},
		{"bad signature", "kiln", "push", map[string]string{"X-Kiln-Signature-256": api.Sign("not-the-secret-at-all", []byte(workRequest))}, workRequest, http.StatusUnauthorized},
		{"signature of another body", "kiln", "push", signed("X-Kiln-Signature-256", "{}"), workRequest, http.StatusUnauthorized},
		{"malformed signature", "kiln", "push", map[string]string{"X-Kiln-Signature-256": "sha1=abc"}, workRequest, http.StatusUnauthorized},
		{"unknown token", "kiln", "push", map[string]string{"Authorization": "Token kiln_nobody"}, workRequest, http.StatusUnauthorized},
		{"malformed body", "kiln", "push", signed("X-Kiln-Signature-256", `{"nope": 1}`), `{"nope": 1}`, http.StatusBadRequest},
		{"GitHub event without its type", "github", "", signed("X-Hub-Signature-256", push), push, http.StatusBadRequest},
		{"GitHub push without a template", "github", "push", signed("X-Hub-Signature-256", push), push, http.StatusBadRequest},
		{"invalid work", "kiln", "push", signed("X-Kiln-Signature-256", `{"work_request": {"task_type": "Worker"}}`), `{"work_request": {"task_type": "Worker"}}`, http.StatusBadRequest},
		{"unknown source", "gitlab", "push", nil, workRequest, http.StatusNotFound},
	} {
		if code, body := hook(c.source, "", c.event, c.header, c.body); code != c.want {
			t.Errorf("%s: %d, want %d: %s", c.name, code, c.want, body)
		}
	}
	if code, body := hook("kiln", "dry_run=1", "push", signed("X-Kiln-Signature-256", workRequest), workRequest); code != http.StatusBadRequest || !strings.Contains(body, "dry_run") {
		t.Errorf("query parameters on a kiln event: %d %s", code, body)
	}
	// kiln's own events are pushes unless they say otherwise.
	if code, body := hook("kiln", "", "", signed("X-Kiln-Signature-256", workRequest), workRequest); code != http.StatusCreated {
		t.Errorf("a kiln event without X-Kiln-Event: %d %s", code, body)
	}
	if code, body := hook("kiln", "", "issues", signed("X-Kiln-Signature-256", "{}"), "{}"); code != http.StatusOK || !strings.Contains(body, "ignored") {
		t.Errorf("an event kiln does not act on: %d %s", code, body)
	}

	// Whoever cannot authenticate chooses no label: a flood of made-up
	// event types adds no series.
	for i := range 40 {
		hook("kiln", "", fmt.Sprintf("made-up-%d", i), nil, workRequest)
		hook("github", "", fmt.Sprintf("made-up-%d", i), map[string]string{"X-Hub-Signature-256": "sha256=00"}, push)
	}

	fams := scrape(t, r.Metrics)
	events := fams["kiln_incoming_events_total"]
	if len(events.series) != 12 {
		t.Errorf("kiln_incoming_events_total has %d series, want 12: %v", len(events.series), events.series)
	}
	for labels, want := range map[string]float64{
		"outcome=processed,source=kiln,type=push":             4,
		"outcome=rejected,source=kiln,type=push":              4, // authenticated, then refused
		"outcome=rejected,source=kiln,type=unauthenticated":   45,
		"outcome=rejected,source=github,type=unauthenticated": 40,
		"outcome=failed,source=kiln,type=push":                1, // the webhook user did not exist yet
		"outcome=rejected,source=github,type=other":           1, // no event type
		"outcome=rejected,source=github,type=push":            1, // no template
		"outcome=ignored,source=kiln,type=issues":             1,
		"outcome=processed,source=github,type=push":           1,
		"outcome=ignored,source=github,type=ping":             1,
		"outcome=ignored,source=github,type=push":             1,
		"outcome=rejected,source=unknown,type=unknown":        1,
	} {
		if got, _ := events.get(labels); got != want {
			t.Errorf("kiln_incoming_events_total{%s} = %v, want %v", labels, got, want)
		}
	}
	if v, _ := fams["kiln_http_requests_total"].get("code=201,method=post,route=POST /api/1.0/hooks/{source}/{$}"); v != 5 {
		t.Errorf("webhook requests by route: %v, want 5 (series %v)", v, fams["kiln_http_requests_total"].series)
	}
}
