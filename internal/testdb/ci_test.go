package testdb_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCIPostgresStopsWhatItStarted: .ci/postgres.sh, which .ci/run uses to
// start the tests' PostgreSQL when none runs and to stop it at the end,
// starts a cluster on the port it is given, says it answers, and leaves
// nothing running once stopped — so a CI run does not leave a server
// behind on the machine it ran on.
func TestCIPostgresStopsWhatItStarted(t *testing.T) {
	if bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl"); len(bins) == 0 {
		t.Skip("no PostgreSQL server binaries here; .ci/run installs them")
	}
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster")
	}
	parent, err := os.MkdirTemp("", "kiln-ci-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	// the cluster's owner (postgres, when the tests run as root) must reach it
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	env := append(os.Environ(), "KILN_TEST_PG_PORT="+strconv.Itoa(port), "KILN_TEST_PG_DIR="+filepath.Join(parent, "data"))
	script := filepath.Join("..", "..", ".ci", "postgres.sh")
	run := func(action string) (string, error) {
		cmd := exec.Command("bash", script, action)
		cmd.Env = env
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	t.Cleanup(func() { run("stop") })

	if _, err := run("status"); err == nil {
		t.Fatalf("something already answers on port %d", port)
	}
	url, err := run("start")
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if want := "127.0.0.1:" + strconv.Itoa(port) + "/"; !strings.Contains(url, want) {
		t.Fatalf("start printed %q, not a URL on %s", url, want)
	}
	if _, err := run("status"); err != nil {
		t.Fatalf("the started cluster does not answer: %v", err)
	}
	if _, err := run("stop"); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := run("status"); err == nil {
		t.Fatal("the cluster still answers after stop")
	}
	if _, err := os.Stat(filepath.Join(parent, "data", "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("the stopped cluster left its postmaster.pid: %v", err)
	}
}
