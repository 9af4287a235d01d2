package api

import (
	"context"
	"testing"

	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestRouteTimingsAreRoutes keeps routeTimings in step with the routes: a
// renamed transfer route must not fall back to an ordinary request's
// deadlines without anyone noticing.
func TestRouteTimingsAreRoutes(t *testing.T) {
	st, err := store.Open(context.Background(), testdb.SQLite(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	routes := map[string]bool{}
	for _, r := range New(st, nil, Options{}).Routes() {
		routes[r.Pattern] = true
	}
	for pattern := range routeTimings {
		if !routes[pattern] {
			t.Errorf("routeTimings names %q, which is no route", pattern)
		}
	}
}
