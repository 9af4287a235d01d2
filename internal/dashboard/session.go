package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/kiln-build/kiln/internal/store"
)

// Cookies of the dashboard. Both are HttpOnly (no script reads them) and
// SameSite=Strict (no other site's page sends them), and Secure when the
// dashboard is reached over HTTPS.
const (
	// sessionCookie holds the secret of a session (store.OpenSession).
	sessionCookie = "kiln_session"
	// signInCookie holds the CSRF secret of the sign-in form, which has no
	// session yet to hold one: the form must send the same value back
	// (a double-submit check).
	signInCookie = "kiln_sign_in"
)

// maxFormBytes bounds a form's body: a token and two secrets.
const maxFormBytes = 16 << 10

// resolveSession finds who the session cookie speaks for. A cookie that no
// longer opens a session — signed out elsewhere, expired, its token
// disabled — is cleared and answered 401, so that a visitor who thinks
// they are signed in learns that they are not, rather than silently seeing
// less (the API answers a refused token the same way).
//
// The sign-in pages are the way out of that state: there a dead cookie is
// cleared without a word.
func (v *visit) resolveSession() error {
	c, err := v.r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil
	}
	p, sess, err := v.d.st.SessionPrincipal(v.ctx(), c.Value)
	if errors.Is(err, store.ErrUnauthenticated) {
		v.clearCookie(sessionCookie)
		if strings.HasPrefix(v.r.URL.Path, "/sign-in/") {
			return nil
		}
		return &pageError{status: http.StatusUnauthorized,
			msg: "Your session has ended: you signed out, it expired, or its token was disabled. Sign in again, or go on without signing in."}
	}
	if err != nil {
		return err
	}
	v.p, v.sess = p, sess
	return nil
}

// cookie sets an HttpOnly, SameSite=Strict cookie for the whole site.
func (v *visit) cookie(name, value string, maxAge int) {
	http.SetCookie(v.w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: v.https()})
}

func (v *visit) clearCookie(name string) { v.cookie(name, "", -1) }

// https reports whether the visitor reached the dashboard over HTTPS,
// directly or through a proxy that says so. Trusting the proxy's header
// can only add the Secure flag, never remove it.
func (v *visit) https() bool {
	return v.r.TLS != nil || strings.EqualFold(v.r.Header.Get("X-Forwarded-Proto"), "https")
}

type signInPage struct {
	CSRF    string
	Next    string
	Problem string
}

func (signInPage) title() string { return "Sign in" }

// signInForm shows the sign-in form with a fresh CSRF secret, also set as
// a cookie that the form's answer must match.
func (d *Dashboard) signInForm(v *visit) error {
	next, err := v.next(v.r.URL.Query())
	if err != nil {
		return err
	}
	if err := v.onlyParams("next"); err != nil {
		return err
	}
	return v.showSignIn(http.StatusOK, next, "")
}

func (v *visit) showSignIn(status int, next, problem string) error {
	b := make([]byte, 32)
	rand.Read(b)
	csrf := hex.EncodeToString(b)
	v.cookie(signInCookie, csrf, 3600)
	v.render(status, "sign-in", signInPage{CSRF: csrf, Next: next, Problem: problem})
	return nil
}

// next is the page to go to after signing in or out: a path of this site
// (never another site, whatever the parameter says), "/" by default.
func (v *visit) next(q url.Values) (string, error) {
	n := q.Get("next")
	if n == "" {
		return "/", nil
	}
	u, err := url.Parse(n)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") ||
		strings.ContainsAny(n, "\\\r\n") {
		return "", badRequest("next must be a path of this site, such as /workers/, not %q", n)
	}
	return n, nil
}

// form reads a POSTed form of exactly the given fields.
func (v *visit) form(fields ...string) (url.Values, error) {
	v.r.Body = http.MaxBytesReader(v.w, v.r.Body, maxFormBytes)
	if err := v.r.ParseForm(); err != nil {
		return nil, badRequest("the form could not be read: %v", err)
	}
	if len(v.r.URL.RawQuery) > 0 {
		return nil, badRequest("forms take no query parameters")
	}
	for k, vals := range v.r.PostForm {
		known := false
		for _, f := range fields {
			known = known || k == f
		}
		if !known {
			return nil, badRequest("the form has an unknown field %q", k)
		}
		if len(vals) != 1 {
			return nil, badRequest("the form gives %q more than once", k)
		}
	}
	return v.r.PostForm, nil
}

// signIn checks the form's CSRF secret against its cookie, then opens a
// session with the token, for users only: a runner's token signs nobody
// in.
func (d *Dashboard) signIn(v *visit) error {
	f, err := v.form("token", "csrf", "next")
	if err != nil {
		return err
	}
	c, cerr := v.r.Cookie(signInCookie)
	if cerr != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(f.Get("csrf"))) != 1 {
		return v.showSignIn(http.StatusForbidden, "/",
			"This form had expired or was not sent from this page (check that cookies are allowed). Please try again.")
	}
	next, err := v.next(f)
	if err != nil {
		return err
	}
	secret := strings.TrimSpace(f.Get("token"))
	if secret == "" {
		return v.showSignIn(http.StatusBadRequest, next, "Paste an API token (kiln token create makes one).")
	}
	p, sess, sessionSecret, err := d.st.OpenSession(v.ctx(), secret, d.opts.SessionLifetime)
	if errors.Is(err, store.ErrUnauthenticated) {
		return v.showSignIn(http.StatusUnauthorized, next, "This token is unknown, disabled or expired, or its user is inactive.")
	}
	if err != nil {
		return err
	}
	if p.User == nil {
		_ = d.st.CloseSession(v.ctx(), sessionSecret)
		return v.showSignIn(http.StatusForbidden, next, "This token belongs to a runner, not to a user: sign in with a user's token.")
	}
	v.clearCookie(signInCookie)
	v.cookie(sessionCookie, sessionSecret, int(sess.ExpiresAt.Sub(v.now).Seconds()))
	http.Redirect(v.w, v.r, next, http.StatusSeeOther)
	return nil
}

// signOut ends the session (for every replica: it is deleted from the
// database) and clears its cookie. The form carries the session's CSRF
// secret.
func (d *Dashboard) signOut(v *visit) error {
	f, err := v.form("csrf")
	if err != nil {
		return err
	}
	if v.sess == nil {
		http.Redirect(v.w, v.r, "/", http.StatusSeeOther)
		return nil
	}
	if subtle.ConstantTimeCompare([]byte(v.sess.CSRF), []byte(f.Get("csrf"))) != 1 {
		return &pageError{status: http.StatusForbidden, msg: "This sign-out form was not sent from this site's page; you are still signed in."}
	}
	c, _ := v.r.Cookie(sessionCookie)
	if err := d.st.CloseSession(v.ctx(), c.Value); err != nil {
		return err
	}
	v.clearCookie(sessionCookie)
	http.Redirect(v.w, v.r, "/", http.StatusSeeOther)
	return nil
}
