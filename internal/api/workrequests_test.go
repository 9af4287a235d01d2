package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
)

func TestWorkRequestLifecycle(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		const base = "/api/1.0/work-requests/"
		submit := func(token string, body string) resp { return e.do("POST", base, token, body) }

		first := submit(e.tok["alice"], `{"task_type": "Worker", "task_name": "command", "workspace": "debian/priv",
			"task_data": {"host_architecture": "amd64", "script": "true", "timeout": 60}}`).want(t, 201).obj(t)
		if first["status"] != "pending" || first["max_retries"] != 3.0 || first["created_by"] != float64(e.ids["alice"]) {
			t.Fatalf("submitted: %v", first)
		}
		dep := submit(e.tok["alice"], `{"task_type": "Worker", "task_name": "noop", "workspace": "debian/priv",
			"task_data": {"host_architecture": "i386"}, "dependencies": [`+itoa(id(first))+`], "max_retries": 0}`).want(t, 201).obj(t)
		if dep["status"] != "blocked" || dep["max_retries"] != 0.0 {
			t.Fatalf("dependent: %v", dep)
		}

		// task data is checked at submission, naming the field
		for _, c := range []struct{ body, field, word string }{
			{`{"task_type": "Worker", "task_name": "command", "workspace": "debian/priv", "task_data": {"host_architecture": "amd64"}}`, "task_data", "script"},
			{`{"task_type": "Worker", "task_name": "command", "workspace": "debian/priv", "task_data": {"host_architecture": "amd64", "script": "x", "timout": 3}}`, "task_data", "timout"},
			{`{"task_type": "Worker", "task_name": "sbuild", "workspace": "debian/priv", "task_data": {"host_architecture": "amd64"}}`, "task_name", "noop"},
			{`{"task_type": "Worker", "task_name": "noop", "workspace": "debian/priv"}`, "task_data", "host_architecture"},
			{`{"task_type": "Workflow", "task_name": "x", "workspace": "debian/priv"}`, "task_type", "workflows"},
			{`{"task_type": "Wait", "task_name": "delay", "workspace": "debian/priv", "task_data": {"delay": "soon"}}`, "task_data", "duration"},
			{`{"task_name": "noop", "workspace": "debian/priv"}`, "task_type", "required"},
			{`{"task_type": "Worker", "task_name": "noop", "workspace": "debian/priv", "task_data": {"host_architecture": "amd64"}, "dependencies": [99999]}`, "dependencies", "99999"},
		} {
			p := submit(e.tok["alice"], c.body).wantProblem(t, 400, c.field)
			if !strings.Contains(p.Detail, c.word) {
				t.Errorf("%s: detail %q lacks %q", c.body, p.Detail, c.word)
			}
		}
		// only admins raise priorities
		submit(e.tok["alice"], `{"task_type": "Worker", "task_name": "noop", "workspace": "debian/priv", "priority": 5,
			"task_data": {"host_architecture": "amd64"}}`).wantProblem(t, 403, "")
		submit(adminSecret, `{"task_type": "Worker", "task_name": "noop", "workspace": "debian/priv", "priority": 5,
			"task_data": {"host_architecture": "amd64"}}`).want(t, 201)
		pub := submit(adminSecret, `{"task_type": "Wait", "task_name": "delay", "workspace": "debian/pub", "task_data": {"delay": 3600}}`).want(t, 201).obj(t)

		// visibility: bob and anonymous callers see the public workspace only
		for _, tok := range []string{e.tok["bob"], ""} {
			list, _ := e.do("GET", base, tok, nil).want(t, 200).list(t)
			if got := ids(list); len(got) != 1 || got[0] != id(pub) {
				t.Fatalf("outsider sees %v", got)
			}
			e.do("GET", base+itoa(id(first))+"/", tok, nil).wantProblem(t, 404, "")
		}
		// filters and pagination
		list, _ := e.do("GET", base+"?status=blocked&workspace=debian/priv", e.tok["alice"], nil).want(t, 200).list(t)
		if got := ids(list); len(got) != 1 || got[0] != id(dep) {
			t.Fatalf("blocked: %v", got)
		}
		list, _ = e.do("GET", base+"?task_name=command", e.tok["alice"], nil).want(t, 200).list(t)
		if got := ids(list); len(got) != 1 || got[0] != id(first) {
			t.Fatalf("by task name: %v", got)
		}
		e.do("GET", base+"?status=runing", e.tok["alice"], nil).wantProblem(t, 400, "status")
		page, next := e.do("GET", base+"?limit=2", adminSecret, nil).want(t, 200).list(t)
		if len(page) != 2 || next == nil {
			t.Fatalf("first page: %d %v", len(page), next)
		}
		rest, _ := e.do("GET", *next, adminSecret, nil).want(t, 200).list(t)
		if len(rest) == 0 || id(rest[0]) <= id(page[1]) {
			t.Fatalf("second page: %v", ids(rest))
		}

		// abort: the dependent is aborted with it; bob may not; twice is a conflict
		e.do("POST", base+itoa(id(first))+"/abort/", e.tok["bob"], `{}`).wantProblem(t, 404, "")
		ab := e.do("POST", base+itoa(id(first))+"/abort/", e.tok["alice"], `{"reason": "wrong branch"}`).want(t, 200).obj(t)
		if ab["status"] != "aborted" || !strings.Contains(ab["output"].(map[string]any)["error"].(string), "wrong branch") {
			t.Fatalf("aborted: %v", ab)
		}
		if d := e.do("GET", base+itoa(id(dep))+"/", e.tok["alice"], nil).want(t, 200).obj(t); d["status"] != "aborted" {
			t.Fatalf("dependent not aborted: %v", d)
		}
		e.do("POST", base+itoa(id(first))+"/abort/", e.tok["alice"], `{}`).wantProblem(t, 409, "status")
		e.do("POST", base+itoa(id(first))+"/abort/", e.tok["alice"], ``).wantProblem(t, 400, "")

		// retry puts it back in the queue, counting the attempt
		re := e.do("POST", base+itoa(id(first))+"/retry/", e.tok["alice"], `{}`).want(t, 200).obj(t)
		if re["status"] != "pending" || re["retries"] != 1.0 {
			t.Fatalf("retried: %v", re)
		}
		e.do("POST", base+itoa(id(first))+"/retry/", e.tok["alice"], `{}`).wantProblem(t, 409, "status")

		// no log before a runner wrote one
		e.do("GET", base+itoa(id(first))+"/logs/", e.tok["alice"], nil).wantProblem(t, 404, "")
		// nor ever for a running request no runner runs (a Wait): no live
		// log to follow
		_, err := e.st.WorkRequests().Update(context.Background(), id(pub), nil, func(wr *model.WorkRequest) error {
			now := time.Now()
			wr.Status, wr.StartedAt = model.StatusRunning, &now
			return nil
		})
		e.must(err)
		e.do("GET", base+itoa(id(pub))+"/logs/", e.tok["alice"], nil).wantProblem(t, 404, "")
		e.do("GET", base+itoa(id(first))+"/logs/?offset=x", e.tok["alice"], nil).wantProblem(t, 400, "offset")
		// requests are not patched or deleted: they move through their lifecycle
		e.do("DELETE", base+itoa(id(first))+"/", adminSecret, nil).wantProblem(t, 405, "")
	})
}
