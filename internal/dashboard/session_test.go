package dashboard_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testdb"
)

// client is an HTTP client with a cookie jar that does not follow
// redirects, to look at each answer.
type client struct {
	t      *testing.T
	f      *farm
	client *http.Client
}

func (f *farm) client(t *testing.T) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, f: f, client: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *client) do(method, path string, form url.Values, header ...string) answer {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.f.srv.URL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return answer{res.StatusCode, res.Header, string(out)}
}

var hiddenInput = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf is the CSRF secret of the form on a page.
func csrf(t *testing.T, p answer) string {
	t.Helper()
	m := hiddenInput.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no CSRF field on the page:\n%s", p.body)
	}
	return m[1]
}

func cookieOf(p answer, name string) *http.Cookie {
	for _, c := range (&http.Response{Header: p.header}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// TestSignInAndOut walks the session's life: the form, its CSRF check, the
// refusals, the cookie's attributes, what a session shows, and signing
// out for good.
func TestSignInAndOut(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		b := f.client(t)
		priv := "/workspaces/" + itoa(f.ids["priv"]) + "/"
		b.do("GET", priv, nil).want(t, http.StatusNotFound, "")

		form := b.do("GET", "/sign-in/?next="+url.QueryEscape(priv), nil)
		form.want(t, http.StatusOK, `name="token"`)
		secret := csrf(t, form)
		signIn := func(token, csrf string, header ...string) answer {
			return b.do("POST", "/sign-in/", url.Values{"token": {token}, "csrf": {csrf}, "next": {priv}}, header...)
		}

		// the CSRF secret must be the one of this client's form
		signIn(f.tok["alice"], strings.Repeat("0", len(secret))).want(t, http.StatusForbidden, "expired or was not sent from this page")
		secret = csrf(t, b.do("GET", "/sign-in/", nil))
		// a form sent by another site's page is refused before anything
		signIn(f.tok["alice"], secret, "Sec-Fetch-Site", "cross-site").want(t, http.StatusForbidden, "another site")
		signIn("kiln_unknown", secret).want(t, http.StatusUnauthorized, "unknown, disabled or expired")
		secret = csrf(t, b.do("GET", "/sign-in/", nil))
		signIn(f.tok["runner"], secret).want(t, http.StatusForbidden, "belongs to a runner")
		secret = csrf(t, b.do("GET", "/sign-in/", nil))
		// unknown fields and foreign redirections are refused
		b.do("POST", "/sign-in/", url.Values{"token": {f.tok["alice"]}, "csrf": {secret}, "remember": {"1"}}).
			want(t, http.StatusBadRequest, "unknown field")
		b.do("POST", "/sign-in/", url.Values{"token": {f.tok["alice"]}, "csrf": {secret}, "next": {"//evil.example/"}}).
			want(t, http.StatusBadRequest, "path of this site")

		ok := signIn(f.tok["alice"], secret)
		if ok.status != http.StatusSeeOther || ok.header.Get("Location") != priv {
			t.Fatalf("sign-in answered %d to %q, want 303 to %s:\n%s", ok.status, ok.header.Get("Location"), priv, ok.body)
		}
		c := cookieOf(ok, "kiln_session")
		if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge <= 0 || c.Value == "" {
			t.Fatalf("session cookie %+v", c)
		}
		if strings.Contains(c.Value, f.tok["alice"]) {
			t.Fatal("the cookie holds the token")
		}
		home := b.do("GET", priv, nil)
		home.want(t, http.StatusOK, "hushed-ws")
		if !strings.Contains(home.body, "Signed in as <strong>alice</strong>") {
			t.Fatalf("the page does not say who is signed in:\n%s", home.body)
		}

		// signing out needs the session's CSRF secret
		b.do("POST", "/sign-out/", url.Values{"csrf": {secret}}).want(t, http.StatusForbidden, "still signed in")
		b.do("GET", priv, nil).want(t, http.StatusOK, "hushed-ws")
		out := b.do("POST", "/sign-out/", url.Values{"csrf": {csrf(t, home)}})
		if out.status != http.StatusSeeOther {
			t.Fatalf("sign-out answered %d:\n%s", out.status, out.body)
		}
		if c := cookieOf(out, "kiln_session"); c == nil || c.MaxAge >= 0 {
			t.Fatalf("sign-out does not clear the cookie: %+v", c)
		}
		b.do("GET", priv, nil).want(t, http.StatusNotFound, "")
		// the session is gone from the database: its cookie, replayed,
		// opens nothing
		f.get(priv, c.Value).want(t, http.StatusUnauthorized, "Your session has ended")
	})
}
