package api_test

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/testdb"

	"github.com/kiln-build/kiln/internal/testkit"
)

// lockedBuffer collects output written from several goroutines.
type lockedBuffer = testkit.Buffer

// TestInternalErrorsDoNotLeak: a failing database is a 500 whose detail
// says nothing about it; the cause goes to the log with the route.
func TestInternalErrorsDoNotLeak(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		var logs lockedBuffer
		a := api.New(e.st, slog.New(slog.NewTextHandler(&logs, nil)), api.Options{})
		srv := httptest.NewServer(a.Handler())
		defer srv.Close()
		e.srv = srv
		e.st.Close() // every query fails from now on
		p := e.do("GET", "/api/1.0/scopes/", "", nil).wantProblem(t, 500, "")
		if strings.Contains(strings.ToLower(p.Detail), "sql") || strings.Contains(p.Detail, "closed") {
			t.Fatalf("500 detail leaks the cause: %q", p.Detail)
		}
		if !strings.Contains(logs.String(), "GET /api/1.0/scopes/{$}") || !strings.Contains(logs.String(), "closed") {
			t.Fatalf("the cause is not logged with its route: %s", logs.String())
		}
	})
}
