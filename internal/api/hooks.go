package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// HookOptions configures the webhook receiver, POST /api/1.0/hooks/{source}/.
type HookOptions struct {
	// Secret verifies signed events (see hookSources for each sender's
	// scheme); empty means only events with "Authorization: Token" are
	// accepted.
	Secret string
	// User is the user that signed events act as; "" means
	// store.AdminUsername. Events sent with a token act as the token's
	// user instead.
	User string
	// Events counts every event by source, type and outcome; nil counts
	// nothing.
	Events *telemetry.EventMetrics
	// ReplayWindow is how long the delivery ids and signatures of events
	// that started work are remembered: the same event sent again within
	// it is refused (409). 0 means DefaultReplayWindow.
	ReplayWindow time.Duration
	// MaxSkew is how far the signed timestamp of a kiln event may be from
	// the server's clock; 0 means DefaultMaxSkew.
	MaxSkew time.Duration
}

// DefaultReplayWindow is how long events are remembered: GitHub lets a
// delivery be redelivered for three days.
const DefaultReplayWindow = 72 * time.Hour

// DefaultMaxSkew bounds the age of a kiln-signed event: long enough for a
// sender's clock to be a little off, short enough that a captured event is
// useless soon (and it is remembered, and refused, meanwhile).
const DefaultMaxSkew = 5 * time.Minute

// maxDeliveryID bounds a delivery id header; real ones are GUIDs.
const maxDeliveryID = 200

// hookSource is how one kind of sender marks and proves its events.
type hookSource struct {
	// eventHeader carries the event type.
	eventHeader string
	// ping is an event type that only checks the hook ("" when none).
	ping string
	// push is the event type that starts work.
	push string
	// defaultEvent is the event type of a request without eventHeader
	// ("" when the header is required).
	defaultEvent string
	// proofHeader carries what authenticates an event without a token:
	// a signature, or for GitLab the secret itself.
	proofHeader string
	// verify checks the proof against the body and the secret. It
	// returns what of the proof identifies this very event (a signature),
	// or "" when the proof is the same on every event (GitLab's token).
	verify func(h *hookRequest) (replayKey string, err error)
	// deliveryHeaders carry the sender's own ids of an event, kept across
	// its retries; each one present is remembered.
	deliveryHeaders []string
	// action turns a push event into the API call that starts the work.
	action func(c *call, body []byte) (hookAction, error)
}

// hookAction is the API call an event makes: POST path with payload, or
// nothing (ignore says why). field maps a field named by that call's
// errors to the part of the event the sender wrote, so that errors name
// what the sender can fix.
type hookAction struct {
	path    string
	payload []byte
	ignore  string
	field   func(string) string
}

// hookRequest is what verify needs to know about one event.
type hookRequest struct {
	r       *http.Request
	body    []byte
	secret  string
	now     time.Time
	maxSkew time.Duration
}

// hookSources are the senders the receiver knows. The source is a path
// segment chosen by whoever configures the sender; a fixed set keeps the
// source label of kiln_incoming_events_total bounded.
var hookSources = map[string]hookSource{
	// kiln's own format: the body names the work to start; the signature
	// covers a timestamp and the delivery id (see SignEvent).
	"kiln": {eventHeader: "X-Kiln-Event", ping: "ping", push: hookPushEvent, defaultEvent: hookPushEvent,
		proofHeader: "X-Kiln-Signature-256", verify: verifyKiln, deliveryHeaders: []string{"X-Kiln-Delivery"},
		action: kilnHookAction},
	// GitHub (and Gitea, Forgejo, which send the same headers): the hook's
	// URL names the workflow template, the push fills in parameters. The
	// signature covers the body only.
	"github": {eventHeader: "X-GitHub-Event", ping: "ping", push: hookPushEvent,
		proofHeader: "X-Hub-Signature-256", verify: verifyBodySignature, deliveryHeaders: []string{"X-GitHub-Delivery"},
		action: templateHookAction(readGitHubPush)},
	// GitLab: the same URL scheme as GitHub; GitLab proves an event by
	// sending the secret in X-Gitlab-Token, the same on every event, so
	// only its event ids tell a replay (keep the hook on HTTPS).
	"gitlab": {eventHeader: "X-Gitlab-Event", push: "Push Hook",
		proofHeader: "X-Gitlab-Token", verify: verifyToken, deliveryHeaders: []string{"Idempotency-Key", "X-Gitlab-Event-UUID"},
		action: templateHookAction(readGitLabPush)},
}

// hookPushEvent is the event type that starts work for kiln and GitHub;
// every other type is acknowledged and ignored.
const hookPushEvent = "push"

// unknownSource labels events for a source the receiver does not know.
const unknownSource = "unknown"

// unauthenticatedType is the type label of events whose sender did not
// prove who it is (no token, a bad token or signature, a body too large to
// check): their event header is anyone's to write, and labelling by it
// would let anybody create series.
const unauthenticatedType = "unauthenticated"

// hookRoutes: the webhook receiver. Events are authenticated either like
// any API call (Authorization: Token, acting as the token's user) or by the
// sender's proof made with the server's webhook secret (acting as
// HookOptions.User). What a push starts goes through the API's own routes,
// POST work-requests/ or POST workflows/, as that user: the same
// validation, the same permissions (contributor of the workspace), the same
// answer. An event that started work is remembered for the replay window
// (in the database, so by every replica): sent again, by its delivery id or
// its signature, it is refused with 409. Every event is counted by source,
// type and outcome (processed, ignored, rejected, failed).
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
	outcome, authenticated, err := a.hook(w, r, name, src, eventType)
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
func (a *API) hook(w http.ResponseWriter, r *http.Request, name string, src hookSource, eventType string) (string, bool, error) {
	if err := checkParams(r); err != nil {
		return telemetry.EventRejected, false, err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes))
	if err != nil {
		return telemetry.EventRejected, false, bodyError(err)
	}
	p, proof, outcome, err := a.hookPrincipal(r, src, body)
	if err != nil {
		// failed is the one outcome after the sender proved who it is (the
		// webhook user is missing: the operator's mistake)
		return outcome, outcome == telemetry.EventFailed, err
	}
	outcome, err = a.authenticatedHook(w, r, name, src, eventType, p, proof, body)
	return outcome, true, err
}

// authenticatedHook handles an event whose sender is p; proof is what of
// its proof identifies it ("" for a token).
func (a *API) authenticatedHook(w http.ResponseWriter, r *http.Request, name string, src hookSource, eventType string,
	p *store.Principal, proof string, body []byte) (string, error) {
	switch {
	case eventType == "":
		return telemetry.EventRejected, errorf(http.StatusBadRequest, src.eventHeader, "the %s header is missing", src.eventHeader)
	case eventType == src.ping && src.ping != "":
		hookReply(w, telemetry.EventIgnored, "pong")
		return telemetry.EventIgnored, nil
	case eventType != src.push:
		hookReply(w, telemetry.EventIgnored, fmt.Sprintf("kiln starts work on %s events only", src.push))
		return telemetry.EventIgnored, nil
	}
	if err := checkJSONMediaType(r.Header.Get("Content-Type")); err != nil {
		return telemetry.EventRejected, err
	}
	// the decoders of the API read the body again
	r.Body = io.NopCloser(bytes.NewReader(body))
	act, err := src.action(&call{a: a, w: w, r: r, p: p}, body)
	if err != nil {
		return telemetry.EventRejected, err
	}
	if act.path == "" {
		hookReply(w, telemetry.EventIgnored, act.ignore)
		return telemetry.EventIgnored, nil
	}
	keys, err := deliveryKeys(r, src, proof)
	if err != nil {
		return telemetry.EventRejected, err
	}
	window := a.opts.Hooks.ReplayWindow
	if window <= 0 {
		window = DefaultReplayWindow
	}
	if len(keys) > 0 {
		if err := a.st.RecordDelivery(r.Context(), name, keys, window); err != nil {
			return telemetry.EventRejected, err
		}
	}
	outcome := a.dispatchHook(w, r, p, act)
	if outcome != telemetry.EventProcessed && len(keys) > 0 {
		// refused or failed work may be sent again once fixed
		if err := a.st.ForgetDelivery(context.WithoutCancel(r.Context()), name, keys); err != nil {
			a.log.Warn("forgetting a webhook event whose work was not started", "source", name, "err", err)
		}
	}
	return outcome, nil
}

// deliveryKeys are what identifies an event: the sender's delivery ids,
// then the event-specific part of its proof.
func deliveryKeys(r *http.Request, src hookSource, proof string) ([]store.DeliveryKey, error) {
	var keys []store.DeliveryKey
	for _, h := range src.deliveryHeaders {
		v := strings.TrimSpace(r.Header.Get(h))
		switch {
		case v == "":
			continue
		case len(v) > maxDeliveryID:
			return nil, invalidField(h, "the %s header is longer than %d characters", h, maxDeliveryID)
		}
		keys = append(keys, store.DeliveryKey{Header: h, Value: v})
	}
	if proof != "" {
		keys = append(keys, store.DeliveryKey{Header: src.proofHeader, Value: proof})
	}
	return keys, nil
}

// hookPrincipal authenticates an event: a token, or else the sender's
// proof. It returns the proof's replay key for signed events.
func (a *API) hookPrincipal(r *http.Request, src hookSource, body []byte) (*store.Principal, string, string, error) {
	if len(r.Header.Values("Authorization")) > 0 {
		c := &call{a: a, r: r}
		if err := c.authenticate(); err != nil {
			return nil, "", telemetry.EventRejected, err
		}
		if err := c.requireUser(); err != nil {
			return nil, "", telemetry.EventRejected, err
		}
		return c.p, "", "", nil
	}
	switch {
	case r.Header.Get(src.proofHeader) == "":
		return nil, "", telemetry.EventRejected, errorf(http.StatusUnauthorized, src.proofHeader,
			`authenticate the event with "Authorization: Token <secret>" or prove it with %s`, src.proofHeader)
	case a.opts.Hooks.Secret == "":
		return nil, "", telemetry.EventRejected, errorf(http.StatusUnauthorized, src.proofHeader,
			"%s is not accepted: the server has no webhook secret (--webhook-secret); send a token instead", src.proofHeader)
	}
	skew := a.opts.Hooks.MaxSkew
	if skew <= 0 {
		skew = DefaultMaxSkew
	}
	proof, err := src.verify(&hookRequest{r: r, body: body, secret: a.opts.Hooks.Secret, now: time.Now(), maxSkew: skew})
	if err != nil {
		return nil, "", telemetry.EventRejected, err
	}
	name := a.opts.Hooks.User
	if name == "" {
		name = store.AdminUsername
	}
	u, err := a.st.Users().Lookup(r.Context(), name, nil)
	if err != nil || !u.Active || u.System {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, "", telemetry.EventFailed, err
		}
		// the operator's mistake, not the sender's: counted as failed
		return nil, "", telemetry.EventFailed, errorf(http.StatusForbidden, "",
			"the webhook user %q does not exist or is inactive (--webhook-user)", name)
	}
	return &store.Principal{User: u}, proof, "", nil
}

// Sign returns the signature header value of body with secret,
// "sha256=<hex HMAC-SHA256>", as GitHub sends it in X-Hub-Signature-256.
// It covers the body only: a captured event stays valid, which is why the
// receiver remembers the events it acted on.
func Sign(secret string, body []byte) string {
	return "sha256=" + hex.EncodeToString(mac(secret, body))
}

// SignEvent returns kiln's own signature of an event, the value of
// X-Kiln-Signature-256: "sha256=" and the hex HMAC-SHA256, with secret, of
// the Unix time in seconds (the X-Kiln-Timestamp header), a dot, the
// delivery id (X-Kiln-Delivery, "" when there is none), a dot and the body.
// The timestamp makes a captured event useless once it is older than the
// receiver's tolerance; the delivery id, signed too, tells a replay from a
// second event with the same body.
func SignEvent(secret string, at time.Time, delivery string, body []byte) string {
	msg := strconv.FormatInt(at.Unix(), 10) + "." + delivery + "." + string(body)
	return "sha256=" + hex.EncodeToString(mac(secret, []byte(msg)))
}

func mac(secret string, msg []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(msg)
	return m.Sum(nil)
}

// validSignature compares in constant time.
func validSignature(header string, want []byte) bool {
	got, ok := strings.CutPrefix(strings.TrimSpace(header), "sha256=")
	if !ok {
		return false
	}
	sum, err := hex.DecodeString(got)
	return err == nil && hmac.Equal(sum, want)
}

// verifyBodySignature checks a signature of the body alone (GitHub's
// scheme); the signature itself identifies the event.
func verifyBodySignature(h *hookRequest) (string, error) {
	const header = "X-Hub-Signature-256"
	sig := h.r.Header.Get(header)
	if !validSignature(sig, mac(h.secret, h.body)) {
		return "", errorf(http.StatusUnauthorized, header,
			`the %s signature does not match the body (want "sha256=" and the hex HMAC-SHA256 of the body with the webhook secret)`, header)
	}
	return strings.TrimSpace(sig), nil
}

// verifyKiln checks kiln's own signature (SignEvent) and the age of its
// timestamp.
func verifyKiln(h *hookRequest) (string, error) {
	const sigHeader, tsHeader = "X-Kiln-Signature-256", "X-Kiln-Timestamp"
	ts := strings.TrimSpace(h.r.Header.Get(tsHeader))
	if ts == "" {
		return "", errorf(http.StatusUnauthorized, tsHeader,
			`signed kiln events carry %s, the Unix time in seconds, under the signature: sha256=HMAC-SHA256(secret, "<timestamp>.<X-Kiln-Delivery>.<body>")`, tsHeader)
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", errorf(http.StatusUnauthorized, tsHeader, "%s must be the Unix time in seconds, not %q", tsHeader, ts)
	}
	delivery := strings.TrimSpace(h.r.Header.Get("X-Kiln-Delivery"))
	at := time.Unix(secs, 0)
	sig := strings.TrimSpace(h.r.Header.Get(sigHeader))
	if !validSignature(sig, mac(h.secret, []byte(ts+"."+delivery+"."+string(h.body)))) {
		return "", errorf(http.StatusUnauthorized, sigHeader,
			`the %s signature does not match (want "sha256=" and the hex HMAC-SHA256, with the webhook secret, of "<%s>.<X-Kiln-Delivery>.<body>")`, sigHeader, tsHeader)
	}
	if age := h.now.Sub(at); age > h.maxSkew || age < -h.maxSkew {
		return "", errorf(http.StatusUnauthorized, tsHeader,
			"the event was signed at %s, %s from the server's time: more than the %s accepted (a replay, or a clock that is off)",
			at.UTC().Format(time.RFC3339), age.Round(time.Second), h.maxSkew)
	}
	return sig, nil
}

// verifyToken checks GitLab's X-Gitlab-Token, the secret itself, in
// constant time. It identifies no event.
func verifyToken(h *hookRequest) (string, error) {
	const header = "X-Gitlab-Token"
	if subtle.ConstantTimeCompare([]byte(h.r.Header.Get(header)), []byte(h.secret)) != 1 {
		return "", errorf(http.StatusUnauthorized, header, "the %s header is not the webhook secret", header)
	}
	return "", nil
}

// principalKey carries, in the context of an internal request, who a
// webhook acts as. Only this package can set it.
type principalKey struct{}

// dispatchHook runs the event's API call as p, answers the client with
// the route's answer (its error fields renamed to the parts of the event
// they came from) and returns the event's outcome.
func (a *API) dispatchHook(w http.ResponseWriter, r *http.Request, p *store.Principal, act hookAction) string {
	ctx := context.WithValue(r.Context(), principalKey{}, p)
	inner, err := http.NewRequestWithContext(ctx, http.MethodPost, act.path, bytes.NewReader(act.payload))
	if err != nil {
		a.fail(w, r, err)
		return telemetry.EventFailed
	}
	inner.Header.Set("Content-Type", "application/json")
	rec := &recorder{header: http.Header{}}
	a.probe.ServeHTTP(rec, inner)
	out := rec.body.Bytes()
	if rec.status >= 400 && act.field != nil {
		var prob problem
		if json.Unmarshal(out, &prob) == nil && prob.Field != "" {
			prob.Field = act.field(prob.Field)
			if b, err := json.Marshal(prob); err == nil {
				out = append(b, '\n')
			}
		}
	}
	for _, k := range []string{"Content-Type", "Location", "X-Content-Type-Options", "WWW-Authenticate"} {
		if v := rec.header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(rec.status)
	w.Write(out)
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
//
// Errors of the call it makes name their fields under the key they came
// from: work_request.task_data.
func kilnHookAction(c *call, _ []byte) (hookAction, error) {
	if err := c.noQuery(); err != nil {
		return hookAction{}, err
	}
	var in kilnHookInput
	if err := c.decode(kilnHookSpec, &in); err != nil {
		return hookAction{}, err
	}
	under := func(key string) func(string) string {
		return func(f string) string { return key + "." + f }
	}
	switch {
	case in.WorkRequest != nil && in.Workflow != nil:
		return hookAction{}, invalidField("workflow", `give either "work_request" or "workflow", not both`)
	case in.WorkRequest != nil:
		return hookAction{path: Prefix + "work-requests/", payload: *in.WorkRequest, field: under("work_request")}, nil
	case in.Workflow != nil:
		return hookAction{path: Prefix + "workflows/", payload: *in.Workflow, field: under("workflow")}, nil
	}
	return hookAction{}, invalidField("work_request", `a kiln push event names what to start: "work_request" or "workflow"`)
}

// push is what a forge's push event says, as far as kiln uses it.
type push struct {
	ref, commit, repository string
	deleted                 bool
}

// templateHookAction starts the workflow template named in the hook's URL,
// ?template=NAME[&workspace=SCOPE/NAME][&param.KEY=VALUE…], for a forge's
// push that read decodes. In parameter values, {ref}, {branch}, {commit}
// and {repository} stand for the pushed ref, its branch name, the new head
// commit and the repository's full name. A push that deletes a branch
// starts nothing. Errors of the workflow route name the query parameter
// they came from (template, workspace, param.KEY).
func templateHookAction(read func(body []byte) (push, error)) func(*call, []byte) (hookAction, error) {
	return func(c *call, body []byte) (hookAction, error) {
		if err := checkText(body); err != nil {
			return hookAction{}, err
		}
		ev, err := read(body)
		if err != nil {
			return hookAction{}, err
		}
		if ev.deleted {
			return hookAction{ignore: "a push that deletes a branch starts nothing"}, nil
		}
		q := c.r.URL.Query()
		template := q.Get("template")
		if template == "" {
			return hookAction{}, errorf(http.StatusBadRequest, "template", "the hook's URL names no workflow template: add ?template=NAME")
		}
		repl := strings.NewReplacer("{ref}", ev.ref, "{branch}", strings.TrimPrefix(ev.ref, "refs/heads/"),
			"{commit}", ev.commit, "{repository}", ev.repository)
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
		field := func(f string) string {
			if rest, ok := strings.CutPrefix(f, "parameters."); ok {
				return "param." + rest
			}
			return f
		}
		return hookAction{path: Prefix + "workflows/", payload: payload, field: field}, err
	}
}

// pushField reads one field of a push event into v, naming it on error.
func pushField(obj map[string]json.RawMessage, path, key string, v any, required bool) error {
	raw, ok := obj[key]
	name := key
	if path != "" {
		name = path + "." + key
	}
	if !ok || string(raw) == "null" {
		if required {
			return invalidField(name, "%q is missing: not a push event", name)
		}
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return invalidField(name, "%s", typeMessage(name, err))
	}
	return nil
}

// pushObject reads a push event's body as a JSON object.
func pushObject(body []byte, what string) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return nil, errorf(http.StatusBadRequest, "", "the body is not a %s push event: it must be a JSON object", what)
	}
	return obj, nil
}

// readGitHubPush reads the fields kiln uses of a GitHub push event (which
// carries many more; they are left alone).
func readGitHubPush(body []byte) (push, error) {
	var ev push
	obj, err := pushObject(body, "GitHub")
	if err != nil {
		return ev, err
	}
	if err := pushField(obj, "", "deleted", &ev.deleted, false); err != nil {
		return ev, err
	}
	if err := pushField(obj, "", "ref", &ev.ref, true); err != nil {
		return ev, err
	}
	if ev.deleted {
		return ev, nil
	}
	if err := pushField(obj, "", "after", &ev.commit, true); err != nil {
		return ev, err
	}
	var repo map[string]json.RawMessage
	if err := pushField(obj, "", "repository", &repo, false); err != nil {
		return ev, err
	}
	return ev, pushField(repo, "repository", "full_name", &ev.repository, false)
}

// gitlabDeleted is the "after" of a GitLab push that deletes a branch.
const gitlabDeleted = "0000000000000000000000000000000000000000"

// readGitLabPush reads the fields kiln uses of a GitLab push event.
func readGitLabPush(body []byte) (push, error) {
	var ev push
	obj, err := pushObject(body, "GitLab")
	if err != nil {
		return ev, err
	}
	if err := pushField(obj, "", "ref", &ev.ref, true); err != nil {
		return ev, err
	}
	if err := pushField(obj, "", "after", &ev.commit, true); err != nil {
		return ev, err
	}
	ev.deleted = ev.commit == gitlabDeleted
	var project map[string]json.RawMessage
	if err := pushField(obj, "", "project", &project, false); err != nil {
		return ev, err
	}
	return ev, pushField(project, "project", "path_with_namespace", &ev.repository, false)
}
