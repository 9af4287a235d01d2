package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/dashboard"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// publicRead is why a GET route of the public port answers anyone.
type publicRead struct {
	reason string
	// badToken is the status for a request with an unknown token: 401
	// where the route reads tokens (to narrow its answer), 200 where it
	// ignores them.
	badToken int
}

// publicByDesign lists the GET routes of the public port that are not
// routes of package api or package dashboard (whose TestReadRoutesAuth
// and TestPagesAuth hold each of those to its readers) and answer anyone. A new GET route of the public port must
// be one or the other: TestPublicPortReadRoutes fails otherwise.
var publicByDesign = map[string]publicRead{
	"GET /api/1.0/open-metrics/{$}": {"farm-wide figures for Prometheus (docs/architecture.md#public-endpoint), built to name no workspace, user, " +
		"artifact or file; a scope-restricted token narrows them to its scope", 401},
	"GET /api/1.0/service-status/{$}": {"the same figures as JSON for scripts (docs/architecture.md#public-endpoint)", 401},
	healthyPattern:                    {"liveness probe for load balancers: says only that the process serves", 200},
	readyPattern:                      {"readiness probe: says only whether the database answers", 200},
}

// TestPublicPortReadRoutes walks the GET routes the public port is built
// from: each is an API route or a public one listed above, and each public
// one answers anonymous callers without naming what a private workspace
// holds.
func TestPublicPortReadRoutes(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		st, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if _, err := st.Bootstrap(ctx, "kiln_public_routes_admin", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		// a private workspace whose names must not show
		hidden := []string{"hushed-workspace", "hushed-user", "hushed-collection", "hushed-file.txt"}
		sc := &model.Scope{Name: "debian"}
		must(t, st.Scopes().Create(ctx, sc))
		ws := &model.Workspace{Name: hidden[0], ScopeID: sc.ID}
		must(t, st.Workspaces().Create(ctx, ws))
		u := &model.User{Username: hidden[1], Email: "hushed@example.org", Active: true}
		must(t, st.Users().Create(ctx, u))
		must(t, st.WorkspaceMembers().Create(ctx, &model.WorkspaceMember{WorkspaceID: ws.ID, UserID: &u.ID, Role: model.RoleOwner}))
		must(t, st.Collections().Create(ctx, &model.Collection{Category: "debian:suite", Name: hidden[2], WorkspaceID: ws.ID}))
		must(t, st.Artifacts().Create(ctx, &model.Artifact{Category: "debian:upload", WorkspaceID: ws.ID, CreatedBy: &u.ID,
			Files: []model.ArtifactFile{{Path: hidden[3], SHA256: strings.Repeat("b", 64), Size: 3}}}))
		must(t, st.SubmitWorkRequest(ctx, &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: ws.ID,
			CreatedBy: &u.ID, Data: json.RawMessage(`{"host_architecture": "amd64"}`)}))

		logger := slog.New(slog.DiscardHandler)
		h, err := newHandler(st, localBus(t), Config{}, logger, prometheus.NewRegistry(), nil)
		must(t, err)
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		// routes of packages whose own table tests hold each route to its
		// readers: api (TestReadRoutesAuth) and dashboard (TestPagesAuth)
		a := api.New(st, logger, api.Options{})
		dash, err := dashboard.New(st, a, dashboard.Options{})
		must(t, err)
		tested := map[string]bool{}
		for _, r := range append(a.Routes(), dash.Routes()...) {
			tested[r.Pattern] = true
		}
		routes, err := publicRoutes(st, localBus(t), Config{}, logger, nil, nil)
		must(t, err)
		seen := map[string]bool{}
		for _, r := range routes {
			method, p, _ := strings.Cut(r.Pattern, " ")
			if method != "GET" || tested[r.Pattern] {
				continue
			}
			rule, ok := publicByDesign[r.Pattern]
			if !ok {
				t.Errorf("GET route %q of the public port is no API or dashboard route and not in publicByDesign: list it there "+
					"with why anyone may read it, or serve it through package api or dashboard and give it rules in their table test",
					r.Pattern)
				continue
			}
			seen[r.Pattern] = true
			url := srv.URL + strings.TrimSuffix(p, "{$}")
			code, body := get(t, url, "")
			if code != 200 {
				t.Errorf("%s answered anonymous callers %d: %s", r.Pattern, code, body)
			}
			for _, name := range hidden {
				if strings.Contains(body, name) {
					t.Errorf("%s names %q of a private workspace:\n%s", r.Pattern, name, body)
				}
			}
			if code, body := get(t, url, "kiln_not_a_token"); code != rule.badToken {
				t.Errorf("%s answered an unknown token %d, want %d: %s", r.Pattern, code, rule.badToken, body)
			}
		}
		for p := range publicByDesign {
			if !seen[p] {
				t.Errorf("publicByDesign lists %q, which is no GET route of the public port outside the API: remove it", p)
			}
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
