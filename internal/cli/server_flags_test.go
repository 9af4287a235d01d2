package cli_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/cli"
)

// serverFlags applies args, the environment and the config file to a
// fresh `kiln server` command as a real run does, and returns the values
// of the named flags.
func serverFlags(t *testing.T, args []string, names ...string) ([]string, error) {
	t.Helper()
	root := cli.New(io.Discard, io.Discard)
	cmd, _, err := root.Find([]string{"server"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.ParseFlags(args); err != nil {
		return nil, err
	}
	if err := root.PersistentPreRunE(cmd, nil); err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		out = append(out, flagValue(cmd, n))
	}
	return out, nil
}

// TestRequestMetricsSettings: the request metrics' buckets and excluded
// routes come, like every server setting, from the flag, KILN_ variables
// or the config file, and bad buckets stop the server naming their source.
func TestRequestMetricsSettings(t *testing.T) {
	t.Setenv("KILN_HTTP_DURATION_BUCKETS", "")
	t.Setenv("KILN_HTTP_EXCLUDE_ROUTES", "")
	t.Setenv("KILN_CONFIG", "")
	file := func(body string) string {
		p := filepath.Join(t.TempDir(), "kiln.toml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	names := []string{"http-duration-buckets", "http-exclude-routes"}

	got, err := serverFlags(t, nil, names...)
	if err != nil || got[0] != "0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,120,300" || got[1] != "[]" {
		t.Errorf("defaults: %q, %v", got, err)
	}
	good := file("http_duration_buckets = [0.5, 30, 600]\nhttp_exclude_routes = [\"GET /api/1.0/open-metrics/{$}\", \"GET /api/1.0/service-status/{$}\"]\n")
	got, err = serverFlags(t, []string{"--config", good}, names...)
	if err != nil || got[0] != "0.5,30,600" || got[1] != "[GET /api/1.0/open-metrics/{$},GET /api/1.0/service-status/{$}]" {
		t.Errorf("from the file: %q, %v", got, err)
	}
	t.Setenv("KILN_HTTP_DURATION_BUCKETS", "1,2")
	got, err = serverFlags(t, []string{"--config", good}, names...)
	if err != nil || got[0] != "1,2" {
		t.Errorf("the environment over the file: %q, %v", got, err)
	}
	got, err = serverFlags(t, []string{"--config", good, "--http-duration-buckets", "3,4"}, names...)
	if err != nil || got[0] != "3,4" {
		t.Errorf("the flag over the environment: %q, %v", got, err)
	}
	t.Setenv("KILN_HTTP_DURATION_BUCKETS", "")

	for _, c := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--config", file("http_duration_buckets = [10, 1]\n")}, "", `key "http_duration_buckets"`},
		{nil, "0,1", "KILN_HTTP_DURATION_BUCKETS"},
		{[]string{"--http-duration-buckets", "1,+Inf"}, "", "+Inf is always there"},
	} {
		t.Setenv("KILN_HTTP_DURATION_BUCKETS", c.env)
		if _, err := serverFlags(t, c.args, names...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %q: %v, want an error with %q", c.args, c.env, err, c.want)
		}
	}
}

// TestHeartbeatTimeoutRefused: a heartbeat timeout that would requeue the
// work of a healthy runner (under a second, zero, negative) is refused at
// start-up with the flag named, before anything is opened.
func TestHeartbeatTimeoutRefused(t *testing.T) {
	env := append(os.Environ(), "KILN_DATABASE=sqlite://"+filepath.Join(t.TempDir(), "kiln.db"))
	for _, v := range []string{"0s", "-5s", "500ms"} {
		r := kiln(t, env, "server", "--listen", "127.0.0.1:0", "--heartbeat-timeout", v)
		if r.code != 2 || !strings.Contains(r.stderr, "--heartbeat-timeout: must be at least 1s") {
			t.Errorf("--heartbeat-timeout %s: %s", v, r)
		}
	}
}

// TestReadmeReplicaConfig: the config file that "Running several
// replicas" shows is one `kiln server` accepts, and it sets what it says.
func TestReadmeReplicaConfig(t *testing.T) {
	for _, k := range []string{"KILN_CONFIG", "KILN_DATABASE", "KILN_LISTEN", "KILN_DATA_DIR", "KILN_HEARTBEAT_TIMEOUT", "KILN_LOG_FORMAT"} {
		t.Setenv(k, "")
	}
	var toml string
	for _, b := range readmeBlocks(t, "## Running several replicas") {
		if b.lang == "toml" {
			toml = b.text
		}
	}
	if toml == "" {
		t.Fatal("the README's replicas section shows no config file")
	}
	p := filepath.Join(t.TempDir(), "kiln.toml")
	if err := os.WriteFile(p, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := serverFlags(t, []string{"--config", p}, "database", "listen", "heartbeat-timeout")
	if err != nil {
		t.Fatalf("kiln server refuses the README's replica config: %v", err)
	}
	if !strings.HasPrefix(got[0], "postgres://") || got[1] != "0.0.0.0:8420" || got[2] != "30s" {
		t.Errorf("the README's replica config sets database, listen, heartbeat-timeout to %q", got)
	}
}
