package api_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testdb"
)

// writeRule is what the auth test expects of one write route.
type writeRule struct {
	// body is a request that an admin could make successfully, so that
	// every refusal below is about who asks, never about the body.
	body string
	// outsider is the status for bob, a user with no role anywhere: 403 on
	// admin-only routes and where he sees the workspace but holds no role
	// in it; 404 where the target is in a private workspace he does not
	// see, or is another user's token, exactly as if it did not exist.
	outsider int
}

// publicRoutes take anonymous callers by design (runner registration);
// workers_test.go covers them.
var publicRoutes = map[string]bool{"POST /api/1.0/workers/register/{$}": true}

// writeRules covers every POST, PATCH and DELETE route. A route missing
// here fails TestWriteRoutesAuth, so new routes must state their rules.
var writeRules = map[string]writeRule{
	"POST /api/1.0/scopes/{$}":                             {`{"name": "new"}`, 403},
	"PATCH /api/1.0/scopes/{id}/{$}":                       {`{"label": "x"}`, 403},
	"DELETE /api/1.0/scopes/{id}/{$}":                      {``, 403},
	"POST /api/1.0/workspaces/{$}":                         {`{"name": "new", "scope": "debian"}`, 403},
	"PATCH /api/1.0/workspaces/{id}/{$}":                   {`{"public": true}`, 403},
	"DELETE /api/1.0/workspaces/{id}/{$}":                  {``, 403},
	"POST /api/1.0/workspaces/{id}/members/{$}":            {`{"user": "bob", "role": "owner"}`, 404},
	"DELETE /api/1.0/workspaces/{id}/members/{member}/{$}": {``, 404},
	"POST /api/1.0/users/{$}":                              {`{"username": "new"}`, 403},
	"PATCH /api/1.0/users/{id}/{$}":                        {`{"is_admin": true}`, 403},
	"DELETE /api/1.0/users/{id}/{$}":                       {``, 403},
	"POST /api/1.0/identities/{$}":                         {`{"user": "bob", "issuer": "i", "subject": "s"}`, 403},
	"PATCH /api/1.0/identities/{id}/{$}":                   {`{"user": "bob"}`, 403},
	"DELETE /api/1.0/identities/{id}/{$}":                  {``, 403},
	"POST /api/1.0/groups/{$}":                             {`{"name": "new", "scope": "debian"}`, 403},
	"PATCH /api/1.0/groups/{id}/{$}":                       {`{"members": ["bob"]}`, 403},
	"DELETE /api/1.0/groups/{id}/{$}":                      {``, 403},
	"POST /api/1.0/tokens/{$}":                             {`{"user": "admin"}`, 403},
	"PATCH /api/1.0/tokens/{id}/{$}":                       {`{"enabled": false}`, 404},
	"DELETE /api/1.0/tokens/{id}/{$}":                      {``, 404},
	"POST /api/1.0/file-stores/{$}":                        {`{"name": "new", "backend": "Local"}`, 403},
	"PATCH /api/1.0/file-stores/{id}/{$}":                  {`{"max_size": 1}`, 403},
	"DELETE /api/1.0/file-stores/{id}/{$}":                 {``, 403},
	"POST /api/1.0/worker-pools/{$}": {`{"name": "new", "provider": "process", "architectures": ["amd64"],
		"max_instances": 1}`, 403},
	"PATCH /api/1.0/worker-pools/{id}/{$}":              {`{"max_instances": 1}`, 403},
	"DELETE /api/1.0/worker-pools/{id}/{$}":             {``, 403},
	"POST /api/1.0/assets/{$}":                          {`{"category": "test:x", "workspace": "debian/pub"}`, 403},
	"PATCH /api/1.0/assets/{id}/{$}":                    {`{"data": {}}`, 404},
	"DELETE /api/1.0/assets/{id}/{$}":                   {``, 404},
	"POST /api/1.0/collections/{$}":                     {`{"category": "test:x", "name": "n", "workspace": "debian/pub"}`, 403},
	"PATCH /api/1.0/collections/{id}/{$}":               {`{"data": {}}`, 404},
	"DELETE /api/1.0/collections/{id}/{$}":              {``, 404},
	"POST /api/1.0/collections/{id}/items/{$}":          {`{"name": "n", "category": "test:x"}`, 404},
	"DELETE /api/1.0/collections/{id}/items/{item}/{$}": {``, 404},
	"POST /api/1.0/work-requests/{$}": {`{"task_type": "Worker", "task_name": "noop", "workspace": "debian/pub",
		"task_data": {"host_architecture": "amd64"}}`, 403},
	"POST /api/1.0/work-requests/{id}/abort/{$}":  {`{}`, 404},
	"POST /api/1.0/work-requests/{id}/retry/{$}":  {`{}`, 404},
	"POST /api/1.0/workers/{$}":                   {`{"name": "new-runner"}`, 403},
	"PATCH /api/1.0/workers/{id}/{$}":             {`{"enabled": false}`, 403},
	"DELETE /api/1.0/workers/{id}/{$}":            {``, 403},
	"POST /api/1.0/workers/register/{$}":          {``, 0},
	"POST /api/1.0/artifacts/{$}":                 {`{"category": "test:x", "workspace": "debian/pub"}`, 403},
	"PATCH /api/1.0/artifacts/{id}/{$}":           {`{"data": {}}`, 404},
	"DELETE /api/1.0/artifacts/{id}/{$}":          {``, 404},
	"PUT /api/1.0/artifacts/{id}/files/{path...}": {`{}`, 404},
	"POST /api/1.0/workflow-templates/{$}": {`{"name": "new", "workspace": "debian/pub", "kind": "sequence",
		"steps": [{"name": "s", "task_type": "Wait", "task_name": "delay"}]}`, 403},
	"PATCH /api/1.0/workflow-templates/{id}/{$}":  {`{"priority": 0}`, 404},
	"DELETE /api/1.0/workflow-templates/{id}/{$}": {``, 404},
	"POST /api/1.0/workflows/{$}":                 {`{"template": "pub-build"}`, 403},
	"POST /api/1.0/workflows/{id}/abort/{$}":      {`{}`, 404},
	"POST /api/1.0/hooks/{source}/{$}": {`{"work_request": {"task_type": "Worker", "task_name": "noop",
		"workspace": "debian/pub", "task_data": {"host_architecture": "amd64"}}}`, 403},
}

func TestWriteRoutesAuth(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		before := e.snapshot(t)
		callers := []struct {
			name   string
			header string // Authorization header; "" for none
			status func(writeRule) int
		}{
			{"no token", "", func(writeRule) int { return 401 }},
			{"wrong token", "Token kiln_0000", func(writeRule) int { return 401 }},
			{"bearer scheme", "Bearer " + adminSecret, func(writeRule) int { return 401 }},
			{"disabled token", "Token " + e.tok["disabled"], func(writeRule) int { return 401 }},
			{"inactive user", "Token " + e.tok["carol"], func(writeRule) int { return 401 }},
			{"outsider", "Token " + e.tok["bob"], func(r writeRule) int { return r.outsider }},
			{"worker only", "Token " + e.tok["worker"], func(writeRule) int { return 403 }},
		}
		routes := e.routes("POST", "PATCH", "DELETE", "PUT")
		if len(routes) < len(writeRules) {
			t.Fatalf("Routes() has %d write routes, the rules name %d", len(routes), len(writeRules))
		}
		for _, pattern := range routes {
			rule, ok := writeRules[pattern]
			if !ok {
				t.Errorf("write route %q has no entry in writeRules: add its expectations", pattern)
				continue
			}
			if publicRoutes[pattern] {
				continue
			}
			method, _, _ := strings.Cut(pattern, " ")
			p := e.pathFor(pattern)
			for _, c := range callers {
				t.Run(pattern+"/"+c.name, func(t *testing.T) {
					var body any
					if rule.body != "" {
						body = rule.body
					}
					r := e.request(method, p, c.header, "application/json", body)
					want := c.status(rule)
					field := ""
					if strings.Contains(pattern, "/hooks/") && c.header == "" {
						field = "X-Kiln-Signature-256" // the webhook names the proof it takes instead
					}
					r.wantProblem(t, want, field)
					if want == 401 && r.header.Get("WWW-Authenticate") != "Token" {
						t.Fatalf("401 without WWW-Authenticate: Token: %v", r.header)
					}
				})
			}
		}
		if after := e.snapshot(t); !reflect.DeepEqual(before, after) {
			t.Fatalf("refused requests changed state:\nbefore %v\nafter  %v", before, after)
		}
	})
}
