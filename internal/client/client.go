// Package client talks to a kiln server's REST API (/api/1.0/…) for the
// admin commands: it sends the token, encodes and decodes JSON, turns
// application/problem+json answers into typed errors and follows pagination.
//
// It exists so that the command-line tools deal in resources and errors a
// person can read ("kiln: name already taken (field name, HTTP 409)"), not in
// HTTP details, and so that every command handles errors, authentication and
// paging the same way.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultServer is where the admin commands look for a server when none is
// configured: the address `kiln server` listens on by default.
const DefaultServer = "http://127.0.0.1:8420"

// maxErrorBody bounds how much of an error response is read, so that a proxy
// answering with a huge HTML page cannot flood the terminal.
const maxErrorBody = 64 << 10

// Client is a connection to one kiln server with one token. It is safe for
// concurrent use.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// Option adjusts New.
type Option func(*Client)

// WithHTTPClient replaces the HTTP client, for tests and for custom TLS or
// proxy settings.
func WithHTTPClient(h *http.Client) Option {
	return func(c *Client) { c.http = h }
}

// ServerURL reads a server address as people type it: an http(s) URL
// (scheme and host, optionally a path prefix when the server sits behind a
// reverse proxy), or the host:port that `kiln server` prints without its
// scheme, which is then http. Anything else is refused with a message
// that says what to write, so that a typo in --server is reported before
// any request is made. The URL comes back without query, fragment or
// trailing slash.
func ServerURL(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	if s != "" && !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("kiln: invalid server URL %q: want http://host:port or https://host[/prefix]", strings.TrimSpace(s))
	}
	u.Path, u.RawPath = strings.TrimSuffix(u.Path, "/"), ""
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// New returns a client for the server at baseURL (anything ServerURL
// accepts), authenticating with token; an empty token makes anonymous
// requests.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := ServerURL(baseURL)
	if err != nil {
		return nil, err
	}
	c := &Client{base: u, token: strings.TrimSpace(token), http: &http.Client{Timeout: 60 * time.Second}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// BaseURL returns the server URL the client talks to.
func (c *Client) BaseURL() string { return c.base.String() }

// Error is a failed API call: the server's problem+json document (RFC 9457)
// or, for answers that are not one (a proxy's error page), what could be
// made of them. It prints as "kiln: <detail> (field <field>, HTTP <status>)",
// which is what the admin commands show.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Title is the problem's short summary ("Bad Request").
	Title string
	// Detail explains this occurrence.
	Detail string
	// Field names the input field at fault, if any.
	Field string
}

// Error formats the problem for a person: the detail (or the title, or
// the status text), the field when there is one, and the status code.
func (e *Error) Error() string {
	msg := e.Detail
	if msg == "" {
		msg = e.Title
	}
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Field != "" {
		return fmt.Sprintf("kiln: %s (field %s, HTTP %d)", msg, e.Field, e.Status)
	}
	return fmt.Sprintf("kiln: %s (HTTP %d)", msg, e.Status)
}

// IsNotFound reports whether err is an API error with status 404, so callers
// can fall back (for instance from a name to a search) without parsing text.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// Do sends one request and decodes the answer. path is relative to the
// server URL, must start with '/', is sent as written (build it with Path
// and WithQuery) and may carry a query ("/api/1.0/scopes/?name=x"). in, when not nil, is sent as JSON (a json.RawMessage or []byte is
// sent as is). out, when not nil, receives the decoded body; a
// *json.RawMessage receives the body unchanged, for commands that print raw
// JSON. A status of 400 or more is returned as *Error.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		var data []byte
		switch v := in.(type) {
		case json.RawMessage:
			data = v
		case []byte:
			data = v
		default:
			var err error
			if data, err = json.Marshal(in); err != nil {
				return fmt.Errorf("kiln: encode request: %w", err)
			}
		}
		body = bytes.NewReader(data)
	}
	target, err := c.resolve(path)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return fmt.Errorf("kiln: %w", err)
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Token "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("kiln: %s %s: %w", method, path, ctx.Err())
		}
		return fmt.Errorf("kiln: cannot reach the server at %s (set --server or KILN_SERVER): %w", c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return readError(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("kiln: %s %s: reading answer: %w", method, path, err)
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], data...)
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("kiln: %s %s: unexpected answer (HTTP %d): %w", method, path, resp.StatusCode, err)
	}
	return nil
}

// resolve joins a server-relative path (and query) to the base URL. It also
// accepts an absolute URL on the same server, in case a server ever sends
// "next" links in that form.
func (c *Client) resolve(path string) (string, error) {
	if strings.HasPrefix(path, "http://") || strings.HasPrefix(path, "https://") {
		u, err := url.Parse(path)
		if err != nil || u.Host != c.base.Host {
			return "", fmt.Errorf("kiln: refusing to follow %q: not on %s", path, c.base.Host)
		}
		return path, nil
	}
	if !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("kiln: API path %q must start with /", path)
	}
	u := *c.base
	p, q, _ := strings.Cut(path, "?")
	// A server behind a prefix proxy may already include the prefix in its
	// links; do not double it.
	if c.base.Path != "" && !strings.HasPrefix(p, c.base.Path+"/") {
		p = c.base.Path + p
	}
	u.Path, u.RawPath = "", ""
	return u.String() + p + queryPart(q), nil
}

// APIPrefix is where the REST API lives on a kiln server.
const APIPrefix = "/api/1.0/"

// Path builds the path of a collection or an item from its segments,
// escaping each and ending with the slash kiln's resources carry:
// Path("scopes") is "/api/1.0/scopes/", Path("scopes", "my scope") is
// "/api/1.0/scopes/my%20scope/". Paths given to Do are sent as written, so
// a name that contains '/' or '?' must go through Path.
func Path(segments ...string) string {
	var b strings.Builder
	b.WriteString(strings.TrimSuffix(APIPrefix, "/"))
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	b.WriteByte('/')
	return b.String()
}

// WithQuery appends a query to a path, leaving it unchanged when the query
// is empty.
func WithQuery(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

func queryPart(q string) string {
	if q == "" {
		return ""
	}
	return "?" + q
}

// problem is an application/problem+json body.
type problem struct {
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Field  string `json:"field"`
}

func readError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Status: resp.StatusCode}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var p problem
	if (mt == "application/problem+json" || mt == "application/json") && json.Unmarshal(data, &p) == nil &&
		(p.Title != "" || p.Detail != "") {
		e.Title, e.Detail, e.Field = p.Title, p.Detail, p.Field
		return e
	}
	// Not a problem document: a plain-text error from the server's router
	// or a proxy. Its first line is usually the message.
	text := strings.TrimSpace(string(data))
	if i := strings.IndexByte(text, '\n'); i >= 0 {
		text = strings.TrimSpace(text[:i])
	}
	if mt == "text/plain" && text != "" && len(text) < 300 {
		e.Detail = text
	}
	e.Title = http.StatusText(resp.StatusCode)
	return e
}

// unwrapURLError drops net/url's "Get \"http://…\":" prefix, which repeats
// the URL that the message already names.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Page is one page of a list answer: {"count": n, "next": "<path?query>" |
// null, "results": [...]}.
type Page[T any] struct {
	Count   int     `json:"count"`
	Next    *string `json:"next"`
	Results []T     `json:"results"`
}

// maxPages stops a server that keeps answering with a next link from
// keeping a command busy forever.
const maxPages = 100000

// List fetches every page of a collection, starting at path (with its query,
// if any), following "next" links until there are none, and returns all
// results in order. T may be json.RawMessage to keep results as sent.
func List[T any](ctx context.Context, c *Client, path string) ([]T, error) {
	var all []T
	seen := map[string]bool{}
	for i := 0; path != ""; i++ {
		if seen[path] || i >= maxPages {
			return nil, fmt.Errorf("kiln: the server's pagination loops at %s", path)
		}
		seen[path] = true
		var page Page[T]
		if err := c.Do(ctx, http.MethodGet, path, nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Results...)
		path = ""
		if page.Next != nil {
			path = *page.Next
		}
	}
	if all == nil {
		all = []T{}
	}
	return all, nil
}
