package api_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/store"
)

// A server registers Routes() itself, wrapping each handler (for
// instance to count requests by route pattern); Handler() is the
// unwrapped equivalent.
func ExampleAPI_Routes() {
	dir, _ := os.MkdirTemp("", "kiln-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "kiln.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	st.Bootstrap(ctx, "kiln_example_secret", filepath.Join(dir, "files"))

	a := api.New(st, slog.Default(), api.Options{})
	mux := http.NewServeMux()
	for _, r := range a.Routes() {
		mux.Handle(r.Pattern, r.Handler) // a real server wraps r.Handler here
	}
	for _, r := range a.Routes()[:5] {
		fmt.Println(r.Pattern)
	}
	// Output:
	// GET /api/1.0/scopes/{$}
	// POST /api/1.0/scopes/{$}
	// GET /api/1.0/scopes/{id}/{$}
	// PATCH /api/1.0/scopes/{id}/{$}
	// DELETE /api/1.0/scopes/{id}/{$}
}
