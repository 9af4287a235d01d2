// Package testdb gives tests real databases: a fresh SQLite file and a
// fresh database on a real PostgreSQL server. It never skips PostgreSQL: a
// store test that cannot reach it fails, so a green run always means both
// databases were exercised.
package testdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver for admin statements
)

// PostgresEnv names the variable with the URL of a PostgreSQL server whose
// superuser may create databases. .ci/run sets it.
const PostgresEnv = "KILN_TEST_POSTGRES_URL"

var (
	serverOnce sync.Once
	serverURL  string
	serverErr  error
)

// server returns the URL of the test PostgreSQL server, starting the
// project's throwaway cluster (.ci/postgres.sh) when the variable is unset.
func server() (string, error) {
	serverOnce.Do(func() {
		if u := os.Getenv(PostgresEnv); u != "" {
			serverURL = u
			return
		}
		_, file, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(file), "..", "..", ".ci", "postgres.sh")
		out, err := exec.Command("bash", script).Output()
		if err != nil {
			serverErr = err
			if ee, ok := err.(*exec.ExitError); ok {
				serverErr = &startError{err, string(ee.Stderr)}
			}
			return
		}
		serverURL = strings.TrimSpace(string(out))
	})
	return serverURL, serverErr
}

type startError struct {
	err    error
	stderr string
}

func (e *startError) Error() string { return e.err.Error() + ": " + e.stderr }

// Postgres creates an empty database on the test server and returns its
// URL; the database is dropped when the test ends.
func Postgres(t testing.TB) string {
	t.Helper()
	base, err := server()
	if err != nil {
		t.Fatalf("PostgreSQL is required for store tests (set %s or let .ci/postgres.sh start one): %v", PostgresEnv, err)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	b := make([]byte, 6)
	rand.Read(b)
	name := "kiln_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create test database on %s: %v", base, err)
	}
	t.Cleanup(func() {
		a, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer a.Close()
		a.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// SQLite returns the path of a fresh SQLite database file.
func SQLite(t testing.TB) string {
	return filepath.Join(t.TempDir(), "kiln.db")
}

// Each runs fn once with a fresh SQLite DSN and once with a fresh
// PostgreSQL DSN, as subtests named "sqlite" and "postgres".
func Each(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, SQLite(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, Postgres(t)) })
}
