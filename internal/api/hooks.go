package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// HookOptions configures the webhook receiver, POST /api/1.0/hooks/{source}/.
type HookOptions struct {
	// Secret verifies signed events (HMAC-SHA256 of the body); empty means
	// only events with "Authorization: Token" are accepted.
	Secret string
	// User is the user that signed events act as; "" means
	// store.AdminUsername. Events sent with a token act as the token's
	// user instead.
	User string
	// Events counts every event by source, type and outcome; nil counts
	// nothing.
	Events *telemetry.EventMetrics
}

// hookSource is how one kind of sender marks its events.
type hookSource struct {
	// eventHeader carries the event type.
	eventHeader string
	// signatureHeader carries "sha256=<hex HMAC-SHA256 of the body>".
	signatureHeader string
	// ping is an event type that only checks the hook ("" when none).
	ping string
	// defaultEvent is the event type of a request without eventHeader
	// ("" when the header is required).
	defaultEvent string
	// action turns a push event into the API call that starts the work:
	// its path and body, or no path (and a reason) to ignore the event.
	action func(c *call, body []byte) (path string, payload []byte, err error)
}

// hookSources are the senders the receiver knows. The source is a path
// segment chosen by whoever configures the sender; a fixed set keeps the
// source label of kiln_incoming_events_total bounded.
var hookSources = map[string]hookSource{
	// kiln's own format: the body names the work to start.
	"kiln": {eventHeader: "X-Kiln-Event", signatureHeader: "X-Kiln-Signature-256", ping: "ping", defaultEvent: hookPushEvent,
		action: kilnHookAction},
	// GitHub (and Gitea, Forgejo, which send the same headers): the hook's
	// URL names the workflow template, the push fills in parameters.
	"github": {eventHeader: "X-GitHub-Event", signatureHeader: "X-Hub-Signature-256", ping: "ping", action: githubHookAction},
}

// hookPushEvent is the event type that starts work; every other type is
// acknowledged and ignored.
const hookPushEvent = "push"

// unknownSource labels events for a source the receiver does not know.
const unknownSource = "unknown"

// unauthenticatedType is the type label of events whose sender did not
// prove who it is (no token, a bad token or signature, a body too large to
// check): their event header is anyone's to write, and labelling by it
// would let anybody create series.
const unauthenticatedType = "unauthenticated"

// hookRoutes: the webhook receiver. Events are authenticated either like
// any API call (Authorization: Token, acting as the token's user) or by an
// HMAC-SHA256 signature of the body with the server's webhook secret
// (acting as HookOptions.User). What a push starts goes through the API's
// own routes, POST work-requests/ or POST workflows/, as that user: the
// same validation, the same permissions (contributor of the workspace), the
// same answer. Every event is counted by source, type and outcome
// (processed, ignored, rejected, failed).
func (a *API) hookRoutes() []Route {
	return []Route{{"POST " + Prefix + "hooks/{source}/{$}", http.HandlerFunc(a.receiveHook)}}
}

func (a *API) receiveHook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("source")
	src, ok := hookSources[name]
	if !ok {
		a.observeHook(unknownSource, unknownSource, telemetry.EventRejected)
		names := make([]string, 0, len(hookSources))
		for n := range hookSources {
			names = append(names, n)
		}
		sort.Strings(names)
		a.fail(w, r, errorf(http.StatusNotFound, "source", "unknown webhook source %q; known sources: %s", name, strings.Join(names, ", ")))
		return
	}
	eventType := strings.TrimSpace(r.Header.Get(src.eventHeader))
	if eventType == "" {
		eventType = src.defaultEvent
	}
	outcome, authenticated, err := a.hook(w, r, src, eventType)
	if err != nil {
		if _, internal := asProblem(err); internal {
			outcome = telemetry.EventFailed // kiln's fault (the database), not the sender's
		}
	}
	if !authenticated {
		eventType = unauthenticatedType
	}
	a.observeHook(name, eventType, outcome)
	if err != nil {
		a.fail(w, r, err)
	}
}

func (a *API) observeHook(source, eventType, outcome string) {
	if a.opts.Hooks.Events != nil {
		a.opts.Hooks.Events.Observe(source, eventType, outcome)
	}
}

// hook handles one event and returns its outcome and whether its sender
// proved who it is; on error nothing was written and the caller answers
// the error.
func (a *API) hook(w http.ResponseWriter, r *http.Request, src hookSource, eventType string) (string, bool, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return telemetry.EventRejected, false, errorf(http.StatusRequestEntityTooLarge, "", "the event is larger than %d bytes", tooBig.Limit)
		}
		return telemetry.EventRejected, false, errorf(http.StatusBadRequest, "", "reading the event: %v", err)
	}
	p, outcome, err := a.hookPrincipal(r, src, body)
	if err != nil {
		// failed is the one outcome after the sender proved who it is (the
		// webhook user is missing: the operator's mistake)
		return outcome, outcome == telemetry.EventFailed, err
	}
	outcome, err = a.authenticatedHook(w, r, src, eventType, p, body)
	return outcome, true, err
}

// authenticatedHook handles an event whose sender is p.
func (a *API) authenticatedHook(w http.ResponseWriter, r *http.Request, src hookSource, eventType string, p *store.Principal, body []byte) (string, error) {
	switch {
	case eventType == "":
		return telemetry.EventRejected, errorf(http.StatusBadRequest, src.eventHeader, "the %s header is missing", src.eventHeader)
	case eventType == src.ping:
		hookReply(w, telemetry.EventIgnored, "pong")
		return telemetry.EventIgnored, nil
	case eventType != hookPushEvent:
		hookReply(w, telemetry.EventIgnored, "kiln starts work on push events only")
		return telemetry.EventIgnored, nil
	}
	// the decoders of the API read the body again
	r.Body = io.NopCloser(bytes.NewReader(body))
	path, payload, err := src.action(&call{a: a, w: w, r: r, p: p}, body)
	if err != nil {
		return telemetry.EventRejected, err
	}
	if path == "" {
		hookReply(w, telemetry.EventIgnored, string(payload))
		return telemetry.EventIgnored, nil
	}
	return a.dispatchHook(w, r, p, path, payload), nil
}

// hookPrincipal authenticates an event: a token, or else the signature.
func (a *API) hookPrincipal(r *http.Request, src hookSource, body []byte) (*store.Principal, string, error) {
	if len(r.Header.Values("Authorization")) > 0 {
		c := &call{a: a, r: r}
		if err := c.authenticate(); err != nil {
			return nil, telemetry.EventRejected, err
		}
		if err := c.requireUser(); err != nil {
			return nil, telemetry.EventRejected, err
		}
		return c.p, "", nil
	}
	sig := r.Header.Get(src.signatureHeader)
	switch {
	case sig == "":
		return nil, telemetry.EventRejected, errorf(http.StatusUnauthorized, "",
			`authenticate the event with "Authorization: Token <secret>" or sign it in %s`, src.signatureHeader)
	case a.opts.Hooks.Secret == "":
		return nil, telemetry.EventRejected, errorf(http.StatusUnauthorized, "",
			"signed events are not accepted: the server has no webhook secret (--webhook-secret); send a token instead")
	case !validSignature(a.opts.Hooks.Secret, sig, body):
		return nil, telemetry.EventRejected, errorf(http.StatusUnauthorized, src.signatureHeader,
			`the %s signature does not match the body (want "sha256=" and the hex HMAC-SHA256 of the body with the webhook secret)`, src.signatureHeader)
	}
	name := a.opts.Hooks.User
	if name == "" {
		name = store.AdminUsername
	}
	u, err := a.st.Users().Lookup(r.Context(), name, nil)
	if err != nil || !u.Active || u.System {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, telemetry.EventFailed, err
		}
		// the operator's mistake, not the sender's: counted as failed
		return nil, telemetry.EventFailed, errorf(http.StatusForbidden, "",
			"the webhook user %q does not exist or is inactive (--webhook-user)", name)
	}
	return &store.Principal{User: u}, "", nil
}

// Sign returns the signature header value of body with secret,
// "sha256=<hex HMAC-SHA256>", as the receiver expects it and as kiln's own
// notifications carry it.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// validSignature compares in constant time.
func validSignature(secret, header string, body []byte) bool {
	got, ok := strings.CutPrefix(strings.TrimSpace(header), "sha256=")
	if !ok {
		return false
	}
	mac, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	want := hmac.New(sha256.New, []byte(secret))
	want.Write(body)
	return hmac.Equal(mac, want.Sum(nil))
}

// principalKey carries, in the context of an internal request, who a
// webhook acts as. Only this package can set it.
type principalKey struct{}

// dispatchHook runs POST path with payload through the API's own routes
// as p, answers the client with the route's answer and returns the
// event's outcome.
func (a *API) dispatchHook(w http.ResponseWriter, r *http.Request, p *store.Principal, path string, payload []byte) string {
	ctx := context.WithValue(r.Context(), principalKey{}, p)
	inner, err := http.NewRequestWithContext(ctx, http.MethodPost, path, bytes.NewReader(payload))
	if err != nil {
		a.fail(w, r, err)
		return telemetry.EventFailed
	}
	inner.Header.Set("Content-Type", "application/json")
	rec := &recorder{header: http.Header{}}
	a.probe.ServeHTTP(rec, inner)
	for _, k := range []string{"Content-Type", "Location", "X-Content-Type-Options", "WWW-Authenticate"} {
		if v := rec.header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(rec.status)
	w.Write(rec.body.Bytes())
	switch {
	case rec.status < 300:
		return telemetry.EventProcessed
	case rec.status >= 500:
		return telemetry.EventFailed
	}
	return telemetry.EventRejected
}

// recorder keeps the answer of an internal request.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

// hookReply answers an event that started nothing with 200 and why.
func hookReply(w http.ResponseWriter, outcome, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	json.NewEncoder(w).Encode(map[string]string{"outcome": outcome, "detail": detail})
}

// kilnHookInput is kiln's own push event: exactly one of its fields.
type kilnHookInput struct {
	// WorkRequest is the body of POST work-requests/.
	WorkRequest *json.RawMessage `json:"work_request"`
	// Workflow is the body of POST workflows/: template, workspace,
	// parameters.
	Workflow *json.RawMessage `json:"workflow"`
}

var kilnHookSpec = specOf[kilnHookInput, kilnHookInput]()

// kilnHookAction reads kiln's own push event with the API's strict
// decoder (JSON only, unknown fields named, no query parameters):
//
//	{"work_request": {…the body of POST work-requests/…}}
//	{"workflow": {…the body of POST workflows/: template, workspace, parameters…}}
func kilnHookAction(c *call, _ []byte) (string, []byte, error) {
	if err := c.noQuery(); err != nil {
		return "", nil, err
	}
	var in kilnHookInput
	if err := c.decode(kilnHookSpec, &in); err != nil {
		return "", nil, err
	}
	switch {
	case in.WorkRequest != nil && in.Workflow != nil:
		return "", nil, invalidField("workflow", `give either "work_request" or "workflow", not both`)
	case in.WorkRequest != nil:
		return Prefix + "work-requests/", *in.WorkRequest, nil
	case in.Workflow != nil:
		return Prefix + "workflows/", *in.Workflow, nil
	}
	return "", nil, invalidField("work_request", `a kiln push event names what to start: "work_request" or "workflow"`)
}

// githubHookAction starts the workflow template named in the hook's URL,
// ?template=NAME[&workspace=SCOPE/NAME][&param.KEY=VALUE…], for a GitHub
// push. In parameter values, {ref}, {branch}, {commit} and {repository}
// stand for the pushed ref, its branch name, the new head commit and the
// repository's full name. A push that deletes a branch starts nothing.
func githubHookAction(c *call, body []byte) (string, []byte, error) {
	r := c.r
	if err := checkJSONMediaType(r.Header.Get("Content-Type")); err != nil {
		return "", nil, err // GitHub: set the hook's content type to application/json
	}
	var push struct {
		Ref        string `json:"ref"`
		After      string `json:"after"`
		Deleted    bool   `json:"deleted"`
		Repository struct {
			FullName string `json:"full_name"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(body, &push); err != nil {
		return "", nil, errorf(http.StatusBadRequest, "", "not a GitHub push event: %v", err)
	}
	if push.Deleted {
		return "", []byte("a push that deletes a branch starts nothing"), nil
	}
	q := r.URL.Query()
	template := q.Get("template")
	if template == "" {
		return "", nil, errorf(http.StatusBadRequest, "template", "the hook's URL names no workflow template: add ?template=NAME")
	}
	repl := strings.NewReplacer("{ref}", push.Ref, "{branch}", strings.TrimPrefix(push.Ref, "refs/heads/"),
		"{commit}", push.After, "{repository}", push.Repository.FullName)
	params := map[string]string{}
	for k, vs := range q {
		if name, ok := strings.CutPrefix(k, "param."); ok && len(vs) > 0 {
			params[name] = repl.Replace(vs[len(vs)-1])
		}
	}
	in := map[string]any{"template": template, "parameters": params}
	if ws := q.Get("workspace"); ws != "" {
		in["workspace"] = ws
	}
	payload, err := json.Marshal(in)
	return Prefix + "workflows/", payload, err
}
