package cli_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/cli"
)

// TestRunnerConcurrentSetting: `concurrent` comes from the flag, the
// environment or the config file like every runner setting, and a value
// the runner cannot use is refused before it connects, naming the flag.
func TestRunnerConcurrentSetting(t *testing.T) {
	t.Setenv("KILN_CONFIG", "")
	t.Setenv("KILN_CONCURRENT", "")
	conf := filepath.Join(t.TempDir(), "runner.toml")
	if err := os.WriteFile(conf, []byte("concurrent = 4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	value := func(env string, args ...string) string {
		t.Helper()
		t.Setenv("KILN_CONCURRENT", env)
		root := cli.New(io.Discard, io.Discard)
		cmd, _, err := root.Find([]string{"runner"})
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		if err := root.PersistentPreRunE(cmd, nil); err != nil {
			t.Fatal(err)
		}
		return flagValue(cmd, "concurrent")
	}
	for _, c := range []struct {
		env  string
		args []string
		want string
	}{
		{"", nil, "1"},
		{"", []string{"--concurrent", "8"}, "8"},
		{"6", nil, "6"},
		{"", []string{"--config", conf}, "4"},
		{"6", []string{"--config", conf, "--concurrent", "2"}, "2"},
	} {
		if got := value(c.env, c.args...); got != c.want {
			t.Errorf("env %q, args %v: concurrent %s, want %s", c.env, c.args, got, c.want)
		}
	}
	t.Setenv("KILN_CONCURRENT", "")
	for args, want := range map[string]string{
		"--concurrent 0":        "--concurrent: 0 is not a number of tasks",
		"--concurrent 1000":     "use 1 to 256",
		"--concurrent 2 --once": "--once runs one task",
	} {
		root := cli.New(io.Discard, io.Discard)
		root.SetArgs(append([]string{"runner", "--server", "http://127.0.0.1:1", "--token", "kiln_unused", "--work-dir", t.TempDir()}, strings.Fields(args)...))
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("kiln runner %s: %v, want an error saying %q", args, err, want)
		}
	}
}
