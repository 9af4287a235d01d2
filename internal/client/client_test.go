package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// fakeAPI serves a few scopes with pagination, a problem+json error and a
// plain-text 404, and records what it was sent.
type fakeAPI struct {
	t        *testing.T
	lastAuth string
	lastBody string
	lastPath string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.lastAuth = r.Header.Get("Authorization")
	f.lastPath = r.URL.RequestURI()
	b, _ := io.ReadAll(r.Body)
	f.lastBody = string(b)
	p := strings.TrimPrefix(r.URL.Path, "/prefix")
	switch {
	case p == "/api/1.0/scopes/" && r.Method == http.MethodGet:
		// three pages of two, then one
		after, _ := strconv.Atoi(r.URL.Query().Get("after"))
		var results []map[string]any
		for id := after + 1; id <= after+2 && id <= 5; id++ {
			results = append(results, map[string]any{"id": id, "name": fmt.Sprintf("s%d", id)})
		}
		var next any
		if after+2 < 5 {
			next = fmt.Sprintf("/api/1.0/scopes/?after=%d", after+2)
		}
		writeJSON(w, 200, map[string]any{"count": 5, "next": next, "results": results})
	case p == "/api/1.0/scopes/" && r.Method == http.MethodPost:
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, `{"title":"Conflict","status":409,"detail":"name already taken","field":"name"}`)
	case p == "/api/1.0/loop/":
		writeJSON(w, 200, map[string]any{"count": 1, "next": "/api/1.0/loop/", "results": []int{1}})
	case p == "/api/1.0/empty/":
		writeJSON(w, 200, map[string]any{"count": 0, "next": nil, "results": []int{}})
	case p == "/api/1.0/scopes/1/" && r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	case p == "/api/1.0/scopes/1/":
		writeJSON(w, 200, map[string]any{"id": 1, "name": "debian"})
	case p == "/api/1.0/unauthorized/":
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"title":"Unauthorized","status":401,"detail":"invalid or disabled token"}`)
	case p == "/api/1.0/html/":
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "<html><body>Bad gateway</body></html>")
	default:
		http.NotFound(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func newTestClient(t *testing.T, token string) (*Client, *fakeAPI) {
	t.Helper()
	f := &fakeAPI{t: t}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	return c, f
}

type scope struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

func TestDoDecodesAndAuthenticates(t *testing.T) {
	c, f := newTestClient(t, "kiln_secret")
	var s scope
	if err := c.Do(context.Background(), "GET", "/api/1.0/scopes/1/", nil, &s); err != nil {
		t.Fatal(err)
	}
	if s.Name != "debian" || s.ID != 1 {
		t.Errorf("decoded %+v", s)
	}
	if f.lastAuth != "Token kiln_secret" {
		t.Errorf("Authorization = %q", f.lastAuth)
	}
}

func TestDoAnonymous(t *testing.T) {
	c, f := newTestClient(t, "")
	if err := c.Do(context.Background(), "GET", "/api/1.0/scopes/1/", nil, nil); err != nil {
		t.Fatal(err)
	}
	if f.lastAuth != "" {
		t.Errorf("anonymous request sent Authorization %q", f.lastAuth)
	}
}

func TestDoRaw(t *testing.T) {
	c, _ := newTestClient(t, "t")
	var raw json.RawMessage
	if err := c.Do(context.Background(), "GET", "/api/1.0/scopes/1/", nil, &raw); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(raw)) != `{"id":1,"name":"debian"}` {
		t.Errorf("raw = %s", raw)
	}
}

func TestDoNoContent(t *testing.T) {
	c, _ := newTestClient(t, "t")
	var s scope
	if err := c.Do(context.Background(), "DELETE", "/api/1.0/scopes/1/", nil, &s); err != nil {
		t.Fatal(err)
	}
}

func TestDoSendsJSON(t *testing.T) {
	c, f := newTestClient(t, "t")
	for _, in := range []any{map[string]string{"name": "x"}, json.RawMessage(`{"name":"x"}`), []byte(`{"name":"x"}`)} {
		_ = c.Do(context.Background(), "POST", "/api/1.0/scopes/", in, nil)
		if strings.TrimSpace(f.lastBody) != `{"name":"x"}` {
			t.Errorf("%T sent as %q", in, f.lastBody)
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name, method, path string
		status             int
		want               string
	}{
		{"problem with field", "POST", "/api/1.0/scopes/", 409, "kiln: name already taken (field name, HTTP 409)"},
		{"problem without field", "GET", "/api/1.0/unauthorized/", 401, "kiln: invalid or disabled token (HTTP 401)"},
		{"plain-text 404", "GET", "/api/1.0/nothing/", 404, "kiln: 404 page not found (HTTP 404)"},
		{"html from a proxy", "GET", "/api/1.0/html/", 502, "kiln: Bad Gateway (HTTP 502)"},
	}
	c, _ := newTestClient(t, "t")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Do(context.Background(), tt.method, tt.path, map[string]string{"name": "x"}, nil)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if e.Status != tt.status {
				t.Errorf("status = %d, want %d", e.Status, tt.status)
			}
			if err.Error() != tt.want {
				t.Errorf("message = %q\nwant      %q", err, tt.want)
			}
			if IsNotFound(err) != (tt.status == 404) {
				t.Errorf("IsNotFound = %v", IsNotFound(err))
			}
		})
	}
}

func TestList(t *testing.T) {
	c, _ := newTestClient(t, "t")
	got, err := List[scope](context.Background(), c, "/api/1.0/scopes/")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "s1,s2,s3,s4,s5" {
		t.Errorf("pages gave %v", names)
	}
	raw, err := List[json.RawMessage](context.Background(), c, "/api/1.0/scopes/")
	if err != nil || len(raw) != 5 {
		t.Fatalf("raw list: %d results, %v", len(raw), err)
	}
	empty, err := List[scope](context.Background(), c, "/api/1.0/empty/")
	if err != nil || empty == nil || len(empty) != 0 {
		t.Errorf("empty list = %#v, %v (want a non-nil empty slice, which prints as [])", empty, err)
	}
}

func TestListLoop(t *testing.T) {
	c, _ := newTestClient(t, "t")
	_, err := List[int](context.Background(), c, "/api/1.0/loop/")
	if err == nil || !strings.Contains(err.Error(), "loops") {
		t.Fatalf("err = %v", err)
	}
}

func TestPathPrefix(t *testing.T) {
	f := &fakeAPI{t: t}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c, err := New(srv.URL+"/prefix/", "t")
	if err != nil {
		t.Fatal(err)
	}
	got, err := List[scope](context.Background(), c, "/api/1.0/scopes/")
	if err != nil || len(got) != 5 {
		t.Fatalf("%d results, %v", len(got), err)
	}
	if !strings.HasPrefix(f.lastPath, "/prefix/api/1.0/scopes/?after=4") {
		t.Errorf("last request %s", f.lastPath)
	}
}

func TestPath(t *testing.T) {
	for _, tt := range []struct {
		segs []string
		want string
	}{
		{[]string{"scopes"}, "/api/1.0/scopes/"},
		{[]string{"scopes", "debian"}, "/api/1.0/scopes/debian/"},
		{[]string{"scopes", "a b/c?d"}, "/api/1.0/scopes/a%20b%2Fc%3Fd/"},
		{[]string{"collections", "3", "items"}, "/api/1.0/collections/3/items/"},
	} {
		if got := Path(tt.segs...); got != tt.want {
			t.Errorf("Path(%q) = %q, want %q", tt.segs, got, tt.want)
		}
	}
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "http://", "://x", "http://user:pw@host", "host:port:1"} {
		_, err := New(u, "")
		if err == nil {
			t.Errorf("New(%q) accepted", u)
		} else if !strings.Contains(err.Error(), "want http://host:port") {
			t.Errorf("New(%q): %v does not say what to write", u, err)
		}
	}
}

// TestServerURL: host:port, as `kiln server` prints its address, is taken
// as http; URLs keep their scheme and prefix, without a trailing slash.
func TestServerURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8420":                    "http://127.0.0.1:8420",
		" localhost:8420 ":                  "http://localhost:8420",
		"[::1]:8420":                        "http://[::1]:8420",
		"kiln.example.org":                  "http://kiln.example.org",
		"kiln.example.org/kiln/":            "http://kiln.example.org/kiln",
		"https://kiln.example.org/":         "https://kiln.example.org",
		"http://127.0.0.1:8420/x/?q=1#frag": "http://127.0.0.1:8420/x",
		"HTTPS://kiln.example.org:443/a":    "https://kiln.example.org:443/a",
	} {
		u, err := ServerURL(in)
		if err != nil {
			t.Errorf("ServerURL(%q): %v", in, err)
			continue
		}
		if u.String() != want {
			t.Errorf("ServerURL(%q) = %s, want %s", in, u, want)
		}
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := New("http://"+addr, "t")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Do(context.Background(), "GET", "/api/1.0/scopes/", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the server at http://"+addr) {
		t.Fatalf("err = %v", err)
	}
}

func TestRefusesForeignNext(t *testing.T) {
	c, _ := newTestClient(t, "t")
	if err := c.Do(context.Background(), "GET", "http://example.invalid/api/1.0/", nil, nil); err == nil {
		t.Fatal("followed a link to another host, with the token")
	}
}

func ExampleError() {
	err := &Error{Status: 400, Title: "Bad Request", Detail: "must not be empty", Field: "name"}
	fmt.Println(err)
	// Output: kiln: must not be empty (field name, HTTP 400)
}

func ExamplePath() {
	fmt.Println(Path("workspaces", "7", "members"))
	fmt.Println(WithQuery(Path("workspaces"), url.Values{"scope": {"debian"}}))
	// Output:
	// /api/1.0/workspaces/7/members/
	// /api/1.0/workspaces/?scope=debian
}

func ExampleList() {
	srv := httptest.NewServer(&fakeAPI{})
	defer srv.Close()
	c, _ := New(srv.URL, "kiln_secret")
	// List follows "next" links until the last page.
	all, err := List[scope](context.Background(), c, Path("scopes"))
	fmt.Println(len(all), err)
	// Output: 5 <nil>
}
