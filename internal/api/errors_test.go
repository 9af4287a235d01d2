package api_test

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/testdb"
)

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

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
