package api

import (
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
