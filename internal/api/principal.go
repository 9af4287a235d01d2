package api

import (
	"context"
	"net/http"

	"github.com/kiln-build/kiln/internal/store"
)

// Principal resolves the request's Authorization header with the same rules
// as every API route, for handlers mounted beside the API (the public
// metrics endpoint restricts scope-bound tokens with it). It returns nil
// and no error for an anonymous request, and an error for a malformed
// header or a refused token.
func (a *API) Principal(r *http.Request) (*store.Principal, error) {
	c := &call{a: a, r: r}
	if err := c.authenticate(); err != nil {
		return nil, err
	}
	return c.p, nil
}

// ServeAs serves r through the API's own routes as p (nil: anonymous),
// whatever Authorization header r carries: for handlers beside the API
// that know their caller another way (the dashboard's session cookie) and
// want the API's answer — its permission checks included — rather than a
// second implementation of it. r's path must be an API path.
func (a *API) ServeAs(w http.ResponseWriter, r *http.Request, p *store.Principal) {
	inner := r.Clone(context.WithValue(r.Context(), principalKey{}, p))
	inner.Header.Del("Authorization")
	a.probe.ServeHTTP(w, inner)
}
