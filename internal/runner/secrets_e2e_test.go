package runner_test

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testdb"
)

// TestSecretsStayOffTheListeners is defect 4 of issue 13 on real
// processes: the server's PostgreSQL password and webhook secret come from
// files, the runner's token from a file, and even a --token given on the
// command line is not shown by /debug/pprof/cmdline on the unauthenticated
// metrics listeners.
func TestSecretsStayOffTheListeners(t *testing.T) {
	dir := t.TempDir()
	// PostgreSQL's test server trusts local connections, so a password in
	// the URL is accepted and ignored: enough to see where it shows
	u, err := url.Parse(testdb.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	const password, hookSecret = "pg-password-not-for-eyes", "webhook-secret-not-for-eyes"
	u.User = url.UserPassword(u.User.Username(), password)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s := startServer(t, "server", "--database-file", write("database", u.String()),
		"--webhook-secret-file", write("hook", hookSecret), "--metrics-server", "127.0.0.1:0")
	serverMetrics := waitForLine(t, s.proc, regexp.MustCompile(`Internal metrics on (http://\S+)/metrics`))

	token := s.workerToken(t, "r1")
	all := []string{"runner", "--server", s.url, "--name", "r1", "--work-dir", filepath.Join(dir, "r1"),
		"--token-file", write("token", token), "--metrics-server", "127.0.0.1:0", "--log-level", "debug"}
	r1 := start(t, "r1", env(), nil, all...)
	// the dangerous way, for the listener's sake
	token2 := s.workerToken(t, "r2")
	all = []string{"runner", "--server", s.url, "--name", "r2", "--work-dir", filepath.Join(dir, "r2"),
		"--token", token2, "--metrics-server", "127.0.0.1:0", "--log-level", "debug"}
	r2 := start(t, "r2", env(), nil, all...)
	listening := regexp.MustCompile(`metrics server listening.*address=(\S+)`)
	runnerMetrics := []string{"http://" + waitForLine(t, r1, listening), "http://" + waitForLine(t, r2, listening)}

	waitFor(t, 30*time.Second, "both runners to connect", func() bool {
		var page struct {
			Results []struct {
				ConnectedAt *time.Time `json:"connected_at"`
			} `json:"results"`
		}
		s.call(t, "GET", "/api/1.0/workers/?worker_type=external", nil, 200, &page)
		n := 0
		for _, w := range page.Results {
			if w.ConnectedAt != nil {
				n++
			}
		}
		return n == 2
	})
	for _, base := range append(runnerMetrics, serverMetrics) {
		resp, err := http.Get(base + "/debug/pprof/cmdline")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, secret := range []string{password, hookSecret, token, token2} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s/debug/pprof/cmdline shows a secret: %q", base, b)
			}
		}
	}
}

// waitForLine waits for a line of p's output that re matches and returns
// its first group.
func waitForLine(t *testing.T, p *proc, re *regexp.Regexp) string {
	t.Helper()
	var got string
	waitFor(t, 30*time.Second, "a line matching "+re.String(), func() bool {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			got = m[1]
			return true
		}
		return false
	})
	return got
}
