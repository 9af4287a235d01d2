package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/store"
)

// problem is an RFC 9457 problem details object. Field is kiln's extension
// member naming the input field (body field, query parameter or path
// segment) to blame, so that clients can point at it.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Field  string `json:"field,omitempty"`
}

// apiError is an error that already knows its HTTP answer.
type apiError struct {
	status int
	field  string
	detail string
	allow  string // Allow header of a 405
	// retryAfter is the Retry-After header of a 429 or 503, in seconds.
	retryAfter int
}

func (e *apiError) Error() string { return e.detail }

// errorf makes an apiError; field may be "".
func errorf(status int, field, format string, args ...any) error {
	return &apiError{status: status, field: field, detail: fmt.Sprintf(format, args...)}
}

// invalidField is a 400 blaming one input field.
func invalidField(field, format string, args ...any) error {
	return errorf(http.StatusBadRequest, field, format, args...)
}

// forbidden is a 403: the caller is known but may not do this.
func forbidden(format string, args ...any) error {
	return errorf(http.StatusForbidden, "", format, args...)
}

// asProblem turns any error of a handler into the problem to answer, and
// reports whether it is a server failure that must be logged.
func asProblem(err error) (problem, bool) {
	p := problem{Type: "about:blank", Status: http.StatusInternalServerError,
		Detail: "an internal error occurred; the server log has the details"}
	var ae *apiError
	var fe *store.FieldError
	internal := false
	switch {
	case errors.As(err, &ae):
		p.Status, p.Field, p.Detail = ae.status, ae.field, ae.detail
	case errors.As(err, &fe):
		p.Status, p.Field, p.Detail = http.StatusBadRequest, fe.Field, fe.Error()
		if fe.Kind == store.Conflict {
			p.Status = http.StatusConflict
		}
	case errors.Is(err, store.ErrNotFound):
		p.Status, p.Detail = http.StatusNotFound, "the object does not exist or is not visible to you"
	case errors.Is(err, store.ErrUnauthenticated):
		p.Status, p.Detail = http.StatusUnauthorized, unknownToken
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		p.Status, p.Detail = http.StatusServiceUnavailable, "the request was cancelled or timed out before it completed"
	default:
		internal = true
	}
	p.Title = http.StatusText(p.Status)
	return p, internal
}

// fail answers err as a problem. Server failures are logged with the
// request's route and never shown to the client, so database errors do not
// leak table names or values.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	p, internal := asProblem(err)
	if internal {
		a.log.ErrorContext(r.Context(), "api request failed",
			"method", r.Method, "route", r.Pattern, "path", r.URL.Path, "err", err)
	}
	if p.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", "Token")
	}
	var ae *apiError
	if errors.As(err, &ae) && ae.allow != "" {
		w.Header().Set("Allow", ae.allow)
	}
	if errors.As(err, &ae) && ae.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ae.retryAfter))
	}
	body, _ := json.Marshal(p)
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	w.Write(append(body, '\n'))
}

// unmatched answers requests under Prefix that no route takes: 405 with
// Allow when the path exists with other methods, 404 otherwise.
func (a *API) unmatched(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pat := a.probe.Handler(probe); a.pattern[pat] {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		if slices.Contains(allowed, http.MethodGet) {
			allowed = append(allowed, http.MethodHead)
		}
		a.fail(w, r, &apiError{status: http.StatusMethodNotAllowed, allow: strings.Join(allowed, ", "),
			detail: fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allowed, ", "))})
		return
	}
	a.fail(w, r, errorf(http.StatusNotFound, "", "there is no API resource at %s (item paths are <collection>/<numeric id>/, with a trailing slash)", r.URL.Path))
}
