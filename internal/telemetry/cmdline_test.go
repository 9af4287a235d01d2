package telemetry

import (
	"os"
	"strings"
	"testing"
)

// TestCmdlineHidesSecrets: /debug/pprof/cmdline, on a listener without
// authentication, showed the runner's --token, the server's --database
// password and --webhook-secret (issue 13). It now shows the command line
// with every secret replaced.
func TestCmdlineHidesSecrets(t *testing.T) {
	secrets := []string{"kiln_0123456789abcdef", "pg-password", "hook-secret-0123456789", "s3cr3t", "kiln_fromeq"}
	old := os.Args
	os.Args = []string{"/usr/bin/kiln", "server",
		"--database", "postgres://kiln:pg-password@db.example.org/kiln?sslmode=require",
		"--webhook-secret", "hook-secret-0123456789",
		"--token=kiln_fromeq", "--token", "kiln_0123456789abcdef",
		"--notify-url", "https://user:s3cr3t@hooks.example.org/x",
		"--token-file", "/etc/kiln/token", "--listen", "127.0.0.1:8420"}
	t.Cleanup(func() { os.Args = old })

	base := startServer(t, NewInternalMux(testRegistry(t)))
	resp, body := do(t, "GET", base+"/debug/pprof/cmdline", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Errorf("/debug/pprof/cmdline shows %q:\n%q", s, body)
		}
	}
	// what is no secret stays, so that the page still tells what runs
	for _, keep := range []string{"/usr/bin/kiln", "server", "--database", "db.example.org", "--token-file", "/etc/kiln/token", "127.0.0.1:8420"} {
		if !strings.Contains(body, keep) {
			t.Errorf("/debug/pprof/cmdline lost %q:\n%q", keep, body)
		}
	}
}

func TestRedactArgs(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"kiln runner --token T --server http://h", "kiln runner --token xxxxx --server http://h"},
		{"kiln runner --token=T", "kiln runner --token=xxxxx"},
		{"kiln server --webhook-secret S --webhook-user ci", "kiln server --webhook-secret xxxxx --webhook-user ci"},
		{"kiln server --database postgres://u:p@h/db", "kiln server --database postgres://u:xxxxx@h/db"},
		{"kiln server --database=postgres://u@h/db", "kiln server --database=postgres://u@h/db"},
		{"kiln x --api-key K --password=P --secret-file /f", "kiln x --api-key xxxxx --password=xxxxx --secret-file /f"},
		{"kiln runner --token", "kiln runner --token"},
		{"kiln --server https://a:b@h/", "kiln --server https://a:xxxxx@h/"},
	} {
		got := strings.Join(RedactArgs(strings.Fields(c.in)), " ")
		if got != c.want {
			t.Errorf("RedactArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
