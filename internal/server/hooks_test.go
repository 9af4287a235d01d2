package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/testdb"
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
		if header, ok := map[string]string{"kiln": "X-Kiln-Event", "github": "X-GitHub-Event", "gitlab": "X-Gitlab-Event"}[source]; ok && event != "" {
			h[header] = event
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
		if header == "X-Kiln-Signature-256" {
			return kilnSigned(secret, time.Now(), body)
		}
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
		{"bad signature", "kiln", "push", kilnSigned("not-the-secret-at-all", time.Now(), workRequest), workRequest, http.StatusUnauthorized},
		{"signature of another body", "kiln", "push", signed("X-Kiln-Signature-256", "{}"), workRequest, http.StatusUnauthorized},
		{"malformed signature", "kiln", "push", map[string]string{"X-Kiln-Timestamp": strconv.FormatInt(time.Now().Unix(), 10), "X-Kiln-Signature-256": "sha1=abc"}, workRequest, http.StatusUnauthorized},
		{"unknown token", "kiln", "push", map[string]string{"Authorization": "Token kiln_nobody"}, workRequest, http.StatusUnauthorized},
		{"malformed body", "kiln", "push", signed("X-Kiln-Signature-256", `{"nope": 1}`), `{"nope": 1}`, http.StatusBadRequest},
		{"GitHub event without its type", "github", "", signed("X-Hub-Signature-256", push), push, http.StatusBadRequest},
		{"GitHub push without a template", "github", "push", signed("X-Hub-Signature-256", push), push, http.StatusBadRequest},
		{"invalid work", "kiln", "push", signed("X-Kiln-Signature-256", `{"work_request": {"task_type": "Worker"}}`), `{"work_request": {"task_type": "Worker"}}`, http.StatusBadRequest},
		{"unknown source", "bitbucket", "push", nil, workRequest, http.StatusNotFound},
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

// kilnSigned returns the headers of an event signed with kiln's own
// scheme: a timestamp and a fresh delivery id, both under the signature.
func kilnSigned(secret string, at time.Time, body string) map[string]string {
	b := make([]byte, 8)
	rand.Read(b)
	id := hex.EncodeToString(b)
	return map[string]string{
		"X-Kiln-Timestamp":     strconv.FormatInt(at.Unix(), 10),
		"X-Kiln-Delivery":      id,
		"X-Kiln-Signature-256": api.SignEvent(secret, at, id, []byte(body)),
	}
}

// problemField reads the field of a problem answer.
func problemField(t *testing.T, body string) string {
	t.Helper()
	var p struct {
		Field  string `json:"field"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal([]byte(body), &p); err != nil || p.Detail == "" {
		t.Fatalf("not a problem: %s", body)
	}
	return p.Field
}

// TestWebhookReplaysRefused: an event that started work is remembered (in
// the database, so by every replica) for the replay window, and the same
// event sent again is refused with 409 naming what repeats: its delivery
// id or its signature. kiln's own signature covers a timestamp, and a stale
// one is refused. An event whose work was refused may be sent again.
func TestWebhookReplaysRefused(t *testing.T) {
	const (
		token  = "kiln_webhook_test_admin_token"
		secret = "kiln-webhook-test-secret-0123"
	)
	dsn := testdb.Postgres(t)
	a := start(t, Config{BootstrapToken: token, WebhookSecret: secret, Database: dsn})
	b := start(t, Config{BootstrapToken: token, WebhookSecret: secret, Database: dsn}) // a second replica
	mustPost(t, a.API+"/api/1.0/scopes/", token, `{"name": "debian"}`)
	mustPost(t, a.API+"/api/1.0/workspaces/", token, `{"name": "main", "scope": "debian", "public": true}`)

	post := func(base, source string, header map[string]string, body string) (int, string) {
		t.Helper()
		h := map[string]string{"Content-Type": "application/json"}
		for k, v := range header {
			h[k] = v
		}
		q := "?template=build&workspace=debian/main"
		if source == "kiln" {
			q = ""
		}
		return request(t, http.MethodPost, base+"/api/1.0/hooks/"+source+"/"+q, h, body)
	}
	github := func(delivery, body string) map[string]string {
		return map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": api.Sign(secret, []byte(body))}
	}
	push := `{"ref": "refs/heads/main", "after": "0123abcd", "repository": {"full_name": "kiln-build/kiln"}}`

	// refused work is forgotten: once the template exists, the same
	// delivery is welcome
	if code, body := post(a.API, "github", github("d-1", push), push); code != http.StatusBadRequest {
		t.Fatalf("push for a template that does not exist: %d %s", code, body)
	}
	mustPost(t, a.API+"/api/1.0/workflow-templates/", token, `{"name": "build", "workspace": "debian/main", "kind": "sequence",
		"steps": [{"name": "build", "task_type": "Worker", "task_name": "noop", "task_data": {"host_architecture": "riscv64"}}]}`)
	if code, body := post(a.API, "github", github("d-1", push), push); code != http.StatusCreated {
		t.Fatalf("the push sent again once its template exists: %d %s", code, body)
	}
	for _, c := range []struct {
		name, base string
		header     map[string]string
		body       string
		field      string
	}{
		{"the same delivery again", a.API, github("d-1", push), push, "X-GitHub-Delivery"},
		{"the same delivery on another replica", b.API, github("d-1", push), push, "X-GitHub-Delivery"},
		{"the same signed body under a new delivery id", b.API, github("d-2", push), push, "X-Hub-Signature-256"},
		{"another body under a used delivery id", a.API, github("d-1", strings.Replace(push, "0123abcd", "4567", 1)),
			strings.Replace(push, "0123abcd", "4567", 1), "X-GitHub-Delivery"},
	} {
		code, body := post(c.base, "github", c.header, c.body)
		if code != http.StatusConflict || problemField(t, body) != c.field {
			t.Errorf("%s: %d %s, want 409 naming %s", c.name, code, body, c.field)
		}
	}
	// a new push is new work
	other := strings.Replace(push, "0123abcd", "89ab", 1)
	if code, body := post(b.API, "github", github("d-3", other), other); code != http.StatusCreated {
		t.Fatalf("a new push: %d %s", code, body)
	}

	// kiln's own scheme: timestamp and delivery id are signed
	wr := `{"work_request": {"task_type": "Worker", "task_name": "noop", "workspace": "debian/main", "task_data": {"host_architecture": "riscv64"}}}`
	h := kilnSigned(secret, time.Now(), wr)
	if code, body := post(a.API, "kiln", h, wr); code != http.StatusCreated {
		t.Fatalf("a kiln event: %d %s", code, body)
	}
	if code, body := post(b.API, "kiln", h, wr); code != http.StatusConflict || problemField(t, body) != "X-Kiln-Delivery" {
		t.Errorf("the kiln event again: %d %s", code, body)
	}
	forged := kilnSigned(secret, time.Now(), wr)
	forged["X-Kiln-Delivery"] = "not-what-was-signed"
	if code, body := post(a.API, "kiln", forged, wr); code != http.StatusUnauthorized || problemField(t, body) != "X-Kiln-Signature-256" {
		t.Errorf("a kiln event with a changed delivery id: %d %s", code, body)
	}
	if code, body := post(a.API, "kiln", kilnSigned(secret, time.Now().Add(-time.Hour), wr), wr); code != http.StatusUnauthorized || problemField(t, body) != "X-Kiln-Timestamp" {
		t.Errorf("a kiln event signed an hour ago: %d %s", code, body)
	}
	noTime := kilnSigned(secret, time.Now(), wr)
	delete(noTime, "X-Kiln-Timestamp")
	if code, body := post(a.API, "kiln", noTime, wr); code != http.StatusUnauthorized || problemField(t, body) != "X-Kiln-Timestamp" {
		t.Errorf("a kiln event without a timestamp: %d %s", code, body)
	}

	// GitLab: its token header is the secret; its event ids are recorded
	lab := `{"object_kind": "push", "ref": "refs/heads/main", "after": "cafe", "project": {"path_with_namespace": "g/p"}}`
	gitlab := map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret, "X-Gitlab-Event-UUID": "u-1", "Idempotency-Key": "k-1"}
	if code, body := post(a.API, "gitlab", gitlab, lab); code != http.StatusCreated {
		t.Fatalf("a GitLab push: %d %s", code, body)
	}
	gitlab["X-Gitlab-Event-UUID"] = "u-2" // a retry keeps its idempotency key
	if code, body := post(b.API, "gitlab", gitlab, lab); code != http.StatusConflict || problemField(t, body) != "Idempotency-Key" {
		t.Errorf("a GitLab retry: %d %s", code, body)
	}
	gitlab["X-Gitlab-Token"] = "wrong-token-wrong-token"
	if code, body := post(b.API, "gitlab", gitlab, lab); code != http.StatusUnauthorized || problemField(t, body) != "X-Gitlab-Token" {
		t.Errorf("a GitLab push with the wrong token: %d %s", code, body)
	}
	var list struct {
		Count int `json:"count"`
	}
	_, body := request(t, http.MethodGet, a.API+"/api/1.0/workflows/", asAdmin(token), "")
	json.Unmarshal([]byte(body), &list)
	if list.Count != 3 {
		t.Errorf("%d workflows started, want 3 (two GitHub pushes, one GitLab push): %s", list.Count, body)
	}
}

// TestWebhookErrorsNameTheField: every refusal of the webhook route says
// which header, query parameter or body field is at fault.
func TestWebhookErrorsNameTheField(t *testing.T) {
	const (
		token  = "kiln_webhook_test_admin_token"
		secret = "kiln-webhook-test-secret-0123"
	)
	r := start(t, Config{BootstrapToken: token, WebhookSecret: secret})
	noSecret := start(t, Config{BootstrapToken: token})
	mustPost(t, r.API+"/api/1.0/scopes/", token, `{"name": "debian"}`)
	mustPost(t, r.API+"/api/1.0/workspaces/", token, `{"name": "main", "scope": "debian", "public": true}`)
	mustPost(t, r.API+"/api/1.0/workflow-templates/", token, `{"name": "build", "workspace": "debian/main", "kind": "sequence",
		"steps": [{"name": "build", "task_type": "Worker", "task_name": "noop", "task_data": {"host_architecture": "{{params.v}}"}}]}`)
	gh := func(body string) map[string]string {
		return map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": strconv.FormatInt(time.Now().UnixNano(), 10),
			"X-Hub-Signature-256": api.Sign(secret, []byte(body)), "Content-Type": "application/json"}
	}
	kiln := func(body string) map[string]string {
		h := kilnSigned(secret, time.Now(), body)
		h["Content-Type"] = "application/json"
		return h
	}
	json := map[string]string{"Content-Type": "application/json"}
	tmpl := "?template=build&workspace=debian/main&param.v={branch}"
	for _, c := range []struct {
		name, base, path string
		header           map[string]string
		body             string
		status           int
		field            string
	}{
		{"no authentication", r.API, "kiln/", json, `{}`, 401, "X-Kiln-Signature-256"},
		{"no secret on the server", noSecret.API, "github/", gh(`{}`), `{}`, 401, "X-Hub-Signature-256"},
		{"a GitHub push whose ref is a number", r.API, "github/" + tmpl, gh(`{"ref": 1, "after": "a"}`), `{"ref": 1, "after": "a"}`, 400, "ref"},
		{"a GitHub push without its ref", r.API, "github/" + tmpl, gh(`{"after": "a"}`), `{"after": "a"}`, 400, "ref"},
		{"a GitHub push whose repository is a string", r.API, "github/" + tmpl, gh(`{"ref": "refs/heads/x", "after": "a", "repository": "x"}`),
			`{"ref": "refs/heads/x", "after": "a", "repository": "x"}`, 400, "repository"},
		{"a GitHub push with a duplicate key", r.API, "github/" + tmpl, gh(`{"ref": "a", "ref": "b", "after": "a"}`), `{"ref": "a", "ref": "b", "after": "a"}`, 400, "ref"},
		{"a GitHub push that is no object", r.API, "github/" + tmpl, gh(`[1]`), `[1]`, 400, ""},
		{"a GitHub push with the wrong media type", r.API, "github/" + tmpl, map[string]string{"X-GitHub-Event": "push",
			"X-Hub-Signature-256": api.Sign(secret, []byte(`{}`)), "Content-Type": "application/x-www-form-urlencoded"}, `{}`, 415, ""},
		{"a parameter the template does not know", r.API, "github/?template=build&workspace=debian/main&param.v=x&param.nope=y",
			gh(`{"ref": "refs/heads/x", "after": "a"}`), `{"ref": "refs/heads/x", "after": "a"}`, 400, "param.nope"},
		{"an unknown workspace", r.API, "github/?template=build&workspace=debian/none&param.v=x",
			gh(`{"ref": "refs/heads/x", "after": "a"}`), `{"ref": "refs/heads/x", "after": "a"}`, 400, "workspace"},
		{"invalid work in a kiln event", r.API, "kiln/", kiln(`{"work_request": {"task_type": "Worker", "task_name": "noop", "workspace": "debian/main"}}`),
			`{"work_request": {"task_type": "Worker", "task_name": "noop", "workspace": "debian/main"}}`, 400, "work_request.task_data"},
		{"an unknown field in a kiln workflow", r.API, "kiln/", kiln(`{"workflow": {"template": "build", "nope": 1}}`),
			`{"workflow": {"template": "build", "nope": 1}}`, 400, "workflow.nope"},
	} {
		code, body := request(t, http.MethodPost, c.base+"/api/1.0/hooks/"+c.path, c.header, c.body)
		if code != c.status || problemField(t, body) != c.field {
			t.Errorf("%s: %d %s, want %d naming %q", c.name, code, body, c.status, c.field)
		}
	}
}

// TestReadmeWebhookExample runs the README's signed kiln event (curl and
// openssl, as a user would) against a real server: the scheme it shows is
// the one the receiver checks, and sending it twice is a replay.
func TestReadmeWebhookExample(t *testing.T) {
	const (
		token  = "kiln_webhook_test_admin_token"
		secret = "kiln-webhook-test-secret-0123"
	)
	for _, tool := range []string{"bash", "curl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README's example needs %s: %v", tool, err)
		}
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	i := strings.Index(text, "- `source` `kiln`:")
	if i < 0 {
		t.Fatal("README: no kiln webhook example")
	}
	text = text[i:]
	from := strings.Index(text, "```sh\n")
	end := strings.Index(text[from+6:], "```")
	if from < 0 || end < 0 {
		t.Fatal("README: the kiln webhook example has no sh block")
	}
	script := text[from+6 : from+6+end]

	r := start(t, Config{BootstrapToken: token, WebhookSecret: secret})
	mustPost(t, r.API+"/api/1.0/scopes/", token, `{"name": "debian"}`)
	mustPost(t, r.API+"/api/1.0/workspaces/", token, `{"name": "main", "scope": "debian", "public": true}`)
	mustPost(t, r.API+"/api/1.0/workflow-templates/", token, `{"name": "build-all", "workspace": "debian/main", "kind": "sequence",
		"steps": [{"name": "build", "task_type": "Worker", "task_name": "noop", "task_data": {"host_architecture": "amd64", "v": "{{params.version}}"}}]}`)
	script = strings.ReplaceAll(script, "http://127.0.0.1:8420", r.API)
	// send the same signed event twice: the second is a replay
	script = strings.Replace(script, "curl ", "for n in 1 2; do curl -s -o /dev/null -w '%{http_code}\\n' ", 1) + "\ndone\n"
	cmd := exec.Command("bash", "-euc", strings.ReplaceAll(script, "\\\n", " "))
	cmd.Env = append(os.Environ(), "KILN_WEBHOOK_SECRET="+secret)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's example failed: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || lines[0] != "201" || lines[1] != "409" {
		t.Fatalf("the README's example, sent twice, answered:\n%s\nwant 201, then 409", out)
	}
}
