package dashboard_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/testdb"
)

// The dashboard's twin of the API's TestReadRoutesAuth: every GET route of
// the dashboard, asked by every kind of visitor, about objects of public
// and private workspaces. A visitor who may not see an object gets the
// page about an object that does not exist (404, word for word), and
// never finds it — its link, its name — on any page: not in lists, counts
// or charts. Who sees what is the API's rule (api.ViewerOf), so the
// audiences below are those of the API's table.

// Visitors of the table. Sessions are opened with each one's token.
const (
	anonymous  = "anonymous"
	dead       = "dead session" // a cookie that opens no session
	outsider   = "outsider"     // bob: a user with no role anywhere
	member     = "member"       // alice: contributor in hushed-ws
	admin      = "admin"
	scopedHere = "scoped here" // the admin's token restricted to debian
	scopedAway = "scoped away" // the admin's token restricted to other
)

var visitors = []string{anonymous, dead, outsider, member, admin, scopedHere, scopedAway}

var visitorToken = map[string]string{outsider: "bob", member: "alice", admin: "admin", scopedHere: "scoped-here", scopedAway: "scoped-away"}

type set map[string]bool

func who(names ...string) set {
	s := set{}
	for _, n := range names {
		s[n] = true
	}
	return s
}

// audiences says who sees each fixture.
var audiences = func() map[string]set {
	inDebian := who(anonymous, outsider, member, admin, scopedHere)
	private := who(member, admin, scopedHere)
	a := map[string]set{
		"scope:debian": inDebian, "scope:other": who(anonymous, outsider, member, admin, scopedAway),
		"far": who(admin, scopedAway),
	}
	for _, k := range []string{"", "wf:", "child:", "wr:", "art:", "log:"} {
		a[k+"pub"], a[k+"priv"] = inDebian, private
	}
	return a
}()

// gate is who a page lets in before it looks at any object.
type gate int

const (
	anyone gate = iota // every visitor
	users              // signed-in visitors; anonymous ones get 401
	open               // every visitor, a dead session too (sign-in, assets)
)

// pageCase is one request of the table.
type pageCase struct {
	// path with {key} for the id of fixture key, {asset:name} for an
	// asset's URL.
	path string
	gate gate
	// object is the fixture whose visibility decides the answer: others
	// get the page about a missing object.
	object string
	// list names fixtures the page lists: present (as a link) for their
	// audience, absent for everyone else.
	list []string
	// raw is the body of a route answering bytes.
	raw string
	// filter says that the object is named by a query parameter: others
	// get the 400 about a missing one, as the API's list filters answer.
	filter bool
}

// pageRules covers every GET route of the dashboard. A route missing here
// fails TestPagesAuth.
var pageRules = map[string][]pageCase{
	"GET /{$}": {
		{path: "/", list: []string{"scope:debian", "scope:other"}},
	},
	"GET /scopes/{id}/{$}": {
		{path: "/scopes/{scope:debian}/", object: "scope:debian", list: []string{"pub", "priv"}},
		{path: "/scopes/{scope:other}/", object: "scope:other", list: []string{"far"}},
	},
	"GET /workspaces/{id}/{$}": {
		{path: "/workspaces/{pub}/", object: "pub", list: []string{"wr:pub", "wf:pub", "child:pub"}},
		{path: "/workspaces/{priv}/", object: "priv", list: []string{"wr:priv", "wf:priv", "child:priv"}},
		{path: "/workspaces/{priv}/?view=workflows", object: "priv", list: []string{"wf:priv"}},
		{path: "/workspaces/{far}/", object: "far"},
	},
	"GET /work-requests/{id}/{$}": {
		{path: "/work-requests/{wr:pub}/", object: "wr:pub", list: []string{"log:pub"}},
		{path: "/work-requests/{wr:priv}/", object: "wr:priv", list: []string{"log:priv"}},
		{path: "/work-requests/{wf:priv}/", object: "wf:priv", list: []string{"child:priv"}},
		{path: "/work-requests/{child:priv}/", object: "child:priv", list: []string{"wf:priv"}},
	},
	"GET /work-requests/{id}/logs/{$}": {
		{path: "/work-requests/{wr:pub}/logs/", object: "wr:pub", raw: "log of the public request\n"},
		{path: "/work-requests/{wr:priv}/logs/", object: "wr:priv", raw: "log of the hushed request\n"},
	},
	"GET /artifacts/{id}/files/{path...}": {
		{path: "/artifacts/{art:pub}/files/hello.txt", object: "art:pub", raw: "hello from the public workspace\n"},
		{path: "/artifacts/{art:priv}/files/hello.txt", object: "art:priv", raw: "hello from the hushed workspace\n"},
		{path: "/artifacts/{log:priv}/files/" + tasks.LogFileName, object: "log:priv", raw: "log of the hushed request\n"},
	},
	"GET /statistics/{$}": {
		{path: "/statistics/", list: []string{"pub", "priv"}},
		{path: "/statistics/?window=30d&workspace={priv}", object: "priv", filter: true, list: []string{"priv"}},
		{path: "/statistics/?scope={scope:other}", object: "scope:other", filter: true},
	},
	"GET /workers/{$}": {
		{path: "/workers/", gate: users, list: []string{"wr:priv"}},
	},
	"GET /sign-in/{$}": {
		{path: "/sign-in/", gate: open},
	},
	"GET /static/{name}": {
		{path: "{asset:kiln.css}", gate: open},
		{path: "{asset:log.js}", gate: open},
	},
	"GET /favicon.ico": {
		{path: "/favicon.ico", gate: open},
	},
}

// links are the references a page can make to fixtures, by kind.
var links = map[string]string{"scope": "/scopes/%s/", "workspace": "/workspaces/%s/", "request": "/work-requests/%s/",
	"artifact": "/artifacts/%s/files/"}

func kindOf(key string) string {
	switch {
	case strings.HasPrefix(key, "scope:"):
		return "scope"
	case strings.HasPrefix(key, "art:"), strings.HasPrefix(key, "log:"):
		return "artifact"
	case strings.Contains(key, ":"):
		return "request"
	}
	return "workspace"
}

func TestPagesAuth(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		cookies := map[string]string{dead: "0123456789abcdef"}
		for v, tok := range visitorToken {
			cookies[v] = f.session(tok)
		}
		mux := f.dash.Handler().(*http.ServeMux)
		for _, r := range f.dash.Routes() {
			method, _, _ := strings.Cut(r.Pattern, " ")
			if method != "GET" {
				continue
			}
			cases, ok := pageRules[r.Pattern]
			if !ok {
				t.Errorf("GET route %q has no entry in pageRules: add a case per kind of object it shows, with its gate and "+
					"the fixture whose visibility decides the answer", r.Pattern)
				continue
			}
			t.Run(r.Pattern, func(t *testing.T) {
				for _, c := range cases {
					path := f.fill(c.path)
					req, _ := http.NewRequest("GET", path, nil)
					if _, got := mux.Handler(req); got != r.Pattern {
						t.Fatalf("case %s is served by %q, not by the route it is listed under", c.path, got)
					}
					for _, v := range visitors {
						t.Run(v+" "+c.path, func(t *testing.T) { f.checkPage(t, c, v, cookies[v]) })
					}
				}
			})
		}
		for pattern := range pageRules {
			found := false
			for _, r := range f.dash.Routes() {
				found = found || r.Pattern == pattern
			}
			if !found {
				t.Errorf("pageRules lists %q, which is no route of the dashboard: remove it", pattern)
			}
		}
	})
}

// checkPage asks c as visitor v and checks the answer.
func (f *farm) checkPage(t *testing.T, c pageCase, v, cookie string) {
	path := f.fill(c.path)
	res := f.get(path, cookie)
	f.checkHeaders(t, res)
	switch {
	case v == dead && c.gate != open:
		res.want(t, http.StatusUnauthorized, "Your session has ended")
		if !strings.Contains(strings.Join(res.header.Values("Set-Cookie"), "\n"), "kiln_session=;") {
			t.Fatalf("the dead session's cookie is not cleared: %v", res.header.Values("Set-Cookie"))
		}
		return
	case v == anonymous && c.gate == users:
		res.want(t, http.StatusUnauthorized, "sign in")
		return
	case c.object != "" && !audiences[c.object][v]:
		status := http.StatusNotFound
		if c.filter {
			status = http.StatusBadRequest
		}
		res.want(t, status, "")
		ghost := f.get(f.ghost(c), cookie)
		ghost.want(t, status, "")
		unnamed := regexp.MustCompile(`\b`+itoa(f.ids[c.object])+`\b`).ReplaceAllString(main(res.body), "999999999")
		if unnamed != main(ghost.body) {
			t.Fatalf("the page tells a hidden object from a missing one:\n hidden:  %s\n missing: %s", main(res.body), main(ghost.body))
		}
		f.noLeak(t, v, res.body)
		return
	}
	res.want(t, http.StatusOK, "")
	if c.raw != "" {
		if res.body != c.raw {
			t.Fatalf("body %q, want %q", res.body, c.raw)
		}
		return
	}
	if strings.HasPrefix(path, "/static/") || path == "/favicon.ico" {
		return
	}
	for _, k := range c.list {
		link := strings.Replace(links[kindOf(k)], "%s", itoa(f.ids[k]), 1)
		if got, want := strings.Contains(res.body, `href="`+link), audiences[k][v]; got != want {
			t.Fatalf("%s (%s) on the page: %v, want %v\n%s", k, link, got, want, main(res.body))
		}
	}
	f.noLeak(t, v, res.body)
}

// noLeak fails when body names or links to a fixture v does not see.
func (f *farm) noLeak(t *testing.T, v, body string) {
	t.Helper()
	for k, aud := range audiences {
		if aud[v] {
			continue
		}
		link := strings.Replace(links[kindOf(k)], "%s", itoa(f.ids[k]), 1)
		if strings.Contains(body, `"`+link) {
			t.Fatalf("the page links to %s (%s), which %s does not see", k, link, v)
		}
	}
	names := map[string]string{"hushed": "priv", "far-away": "far"}
	for name, k := range names {
		if !audiences[k][v] && strings.Contains(body, name) {
			t.Fatalf("the page names %q of %s, which %s does not see", name, k, v)
		}
	}
}

// checkHeaders holds every answer to the dashboard's headers.
func (f *farm) checkHeaders(t *testing.T, res answer) {
	t.Helper()
	csp := res.header.Get("Content-Security-Policy")
	if csp == "" || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("Content-Security-Policy %q", csp)
	}
	if res.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("no X-Content-Type-Options: nosniff")
	}
}

func (p answer) want(t *testing.T, status int, text string) {
	t.Helper()
	if p.status != status || !strings.Contains(p.body, text) {
		t.Fatalf("answer %d, want %d with %q:\n%s", p.status, status, text, p.body)
	}
}

var mainRE = regexp.MustCompile(`(?s)<main[^>]*>(.*)</main>`)

// main is the page's own part, without the layout (whose sign-in link
// carries the path).
func main(body string) string {
	m := mainRE.FindStringSubmatch(body)
	if m == nil {
		return body
	}
	return strings.TrimSpace(m[1])
}

var placeholder = regexp.MustCompile(`\{[^}]+\}`)

// fill replaces {key} with fixture ids and {asset:name} with asset URLs.
func (f *farm) fill(p string) string {
	return placeholder.ReplaceAllStringFunc(p, func(s string) string {
		k := strings.Trim(s, "{}")
		if name, ok := strings.CutPrefix(k, "asset:"); ok {
			u := f.get("/", "").body
			m := regexp.MustCompile(`/static/` + regexp.QuoteMeta(strings.TrimSuffix(name, ".css")[:3]) + `[^"]*`).FindString(u)
			if m == "" {
				f.t.Fatalf("no asset %s in the overview", name)
			}
			return m
		}
		id, ok := f.ids[k]
		if !ok {
			f.t.Fatalf("no fixture %s", s)
		}
		return itoa(id)
	})
}

// ghost is c's path about an object that does not exist.
func (f *farm) ghost(c pageCase) string {
	return f.fill(strings.Replace(c.path, "{"+c.object+"}", "999999999", 1))
}

var _ = context.Background

// TestOverviewCounts: the overview's requests by status count the
// workspaces the visitor sees, and its workers every worker.
func TestOverviewCounts(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		figure := regexp.MustCompile(`data-figure="([a-z-]+)">(\d+)<`)
		for _, c := range []struct {
			who  string
			want map[string]string
		}{
			// pub: a running workflow, its pending step, a completed request
			{anonymous, map[string]string{"pending": "1", "running": "1", "completed": "1", "aborted": "0", "blocked": "0",
				"workers-connected": "1", "workers-busy": "1", "workers-idle": "0", "workers-disconnected": "0"}},
			// and hushed-ws: the same, and wr:priv running
			{member, map[string]string{"pending": "2", "running": "3", "completed": "2", "workers-busy": "1"}},
		} {
			cookie := ""
			if tok := visitorToken[c.who]; tok != "" {
				cookie = f.session(tok)
			}
			body := f.get("/", cookie).body
			got := map[string]string{}
			for _, m := range figure.FindAllStringSubmatch(body, -1) {
				got[m[1]] = m[2]
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("%s: %s = %q, want %s", c.who, k, got[k], v)
				}
			}
		}
	})
}
