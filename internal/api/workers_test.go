package api_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

func TestWorkers(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		// an admin creates a worker: enabled, with its runner token once
		nw := e.do("POST", "/api/1.0/workers/", adminSecret, `{"name": "builder-1"}`).want(t, 201).obj(t)
		tok := nw["token"].(map[string]any)
		secret, _ := tok["secret"].(string)
		if nw["enabled"] != true || nw["worker_type"] != "external" || !strings.HasPrefix(secret, "kiln_") || tok["worker"] != float64(id(nw)) {
			t.Fatalf("created worker: %v", nw)
		}
		p, err := e.st.Authenticate(ctx, secret)
		e.must(err)
		if p.Worker == nil || p.Worker.ID != id(nw) || p.User != nil {
			t.Fatalf("token speaks for %+v", p)
		}
		if got := e.do("GET", "/api/1.0/workers/"+itoa(id(nw))+"/", e.tok["bob"], nil).want(t, 200).obj(t); got["token"] != nil {
			t.Fatalf("worker shows its token: %v", got)
		}
		e.do("POST", "/api/1.0/workers/", e.tok["alice"], `{"name": "x"}`).wantProblem(t, 403, "")
		e.do("POST", "/api/1.0/workers/", adminSecret, `{"name": "builder-1"}`).wantProblem(t, 409, "name")

		// a runner without token registers itself: disabled until enabled
		secret2 := store.NewSecret()
		reg := e.do("POST", "/api/1.0/workers/register/", "", `{"name": "self-made", "secret_hash": "`+store.HashToken(secret2)+`"}`).want(t, 201).obj(t)
		if reg["enabled"] != false {
			t.Fatalf("registered worker is enabled: %v", reg)
		}
		p, err = e.st.Authenticate(ctx, secret2)
		e.must(err)
		if p.Worker == nil || p.Worker.ID != id(reg) || p.Worker.Enabled {
			t.Fatalf("registered token: %+v", p)
		}
		e.do("POST", "/api/1.0/workers/register/", "", `{"name": "self-made", "secret_hash": "`+store.HashToken("x")+`"}`).wantProblem(t, 409, "name")
		e.do("POST", "/api/1.0/workers/register/", "", `{"name": "other", "secret_hash": "abc"}`).wantProblem(t, 400, "secret_hash")
		e.do("POST", "/api/1.0/workers/register/", "", `{"secret_hash": "`+store.HashToken("y")+`"}`).wantProblem(t, 400, "name")

		list, _ := e.do("GET", "/api/1.0/workers/?enabled=false", adminSecret, nil).want(t, 200).list(t)
		var own []map[string]any // the fixtures' pool has a disabled worker of its own
		for _, w := range list {
			if w["worker_pool"] == nil {
				own = append(own, w)
			}
		}
		if got := ids(own); len(got) != 1 || got[0] != id(reg) {
			t.Fatalf("disabled workers: %v", got)
		}
		en := e.do("PATCH", "/api/1.0/workers/"+itoa(id(reg))+"/", adminSecret, `{"enabled": true}`).want(t, 200).obj(t)
		if en["enabled"] != true {
			t.Fatalf("not enabled: %v", en)
		}
		e.do("PATCH", "/api/1.0/workers/"+itoa(id(reg))+"/", adminSecret, `{"worker_type": "server"}`).wantProblem(t, 400, "worker_type")

		// runners connect with a worker token; this API has no scheduler
		e.do("GET", "/api/1.0/workers/connect/", "", nil).wantProblem(t, 401, "")
		e.do("GET", "/api/1.0/workers/connect/", adminSecret, nil).wantProblem(t, 403, "")
		e.do("GET", "/api/1.0/workers/connect/", secret, nil).wantProblem(t, 503, "")
		// a worker token reaches nothing else
		e.do("GET", "/api/1.0/workers/", secret, nil).wantProblem(t, 403, "")
		e.do("DELETE", "/api/1.0/workers/"+itoa(id(reg))+"/", adminSecret, nil).want(t, 204)
		if _, err := e.st.Authenticate(ctx, secret2); err == nil {
			t.Fatal("the token of a deleted worker still works")
		}
	})
}

// TestRegistrationIsBounded: anonymous self-registration cannot fill the
// worker list. Self-registered workers waiting for an admin are capped, the
// rate is limited, and an admin may turn registration off.
func TestRegistrationIsBounded(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		serve := func(opts api.RegistrationOptions) func(name string) resp {
			a := api.New(e.st, nil, api.Options{Registration: opts})
			srv := httptest.NewServer(a.Handler())
			t.Cleanup(srv.Close)
			return func(name string) resp {
				t.Helper()
				old := e.srv
				e.srv = srv
				defer func() { e.srv = old }()
				return e.do("POST", "/api/1.0/workers/register/", "", `{"name": "`+name+`", "secret_hash": "`+store.HashToken(name)+`"}`)
			}
		}

		// a cap on workers waiting for an admin
		register := serve(api.RegistrationOptions{MaxPending: 3, PerMinute: 1000})
		for i := range 3 {
			register("pending-"+itoa(int64(i))).want(t, 201)
		}
		p := register("one-too-many").wantProblem(t, 409, "")
		if !strings.Contains(p.Detail, "3") || !strings.Contains(p.Detail, "admin") {
			t.Errorf("the refusal does not say why: %s", p.Detail)
		}
		// an admin deals with one: there is room again
		list := e.do("GET", "/api/1.0/workers/?name=pending-0", adminSecret, nil).want(t, 200)
		results, _ := list.list(t)
		e.do("PATCH", "/api/1.0/workers/"+itoa(id(results[0]))+"/", adminSecret, `{"enabled": true}`).want(t, 200)
		register("after-enabling").want(t, 201)
		register("full-again").wantProblem(t, 409, "")

		// a rate: a burst, then 429 with Retry-After
		register = serve(api.RegistrationOptions{MaxPending: 1000, PerMinute: 2})
		register("r-1").want(t, 201)
		register("r-2").want(t, 201)
		r := register("r-3")
		r.wantProblem(t, 429, "")
		if r.header.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After: %v", r.header)
		}

		// the report: 100 anonymous calls made 100 workers
		register = serve(api.RegistrationOptions{})
		created := 0
		for i := range 100 {
			if register("flood-"+itoa(int64(i))).status == 201 {
				created++
			}
		}
		if created == 0 || created > api.DefaultMaxPendingRegistrations {
			t.Fatalf("100 anonymous registrations made %d workers with the default options", created)
		}

		// off
		register = serve(api.RegistrationOptions{Disabled: true})
		if p := register("nobody").wantProblem(t, 403, ""); !strings.Contains(p.Detail, "kiln worker create") {
			t.Errorf("the refusal does not say what to do instead: %s", p.Detail)
		}
	})
}
