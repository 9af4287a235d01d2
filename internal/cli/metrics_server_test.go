package cli_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/cli"

	"github.com/kiln-build/kiln/internal/testkit"
)

// configure parses args for the subcommand sub of a fresh kiln command and
// applies the environment and config-file layers exactly as a real run
// does (the root's PersistentPreRunE), without running the command. It
// returns the resulting --metrics-server value.
func configure(t *testing.T, sub string, args ...string) (string, error) {
	t.Helper()
	root := cli.New(io.Discard, io.Discard)
	cmd, _, err := root.Find([]string{sub})
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.ParseFlags(args); err != nil {
		return "", err
	}
	if err := root.PersistentPreRunE(cmd, nil); err != nil {
		return "", err
	}
	return flagValue(cmd, "metrics-server"), nil
}

func flagValue(cmd *cobra.Command, name string) string {
	return cmd.Flags().Lookup(name).Value.String()
}

// writeConfig writes a config.toml setting metrics_server to value, encoded
// by a TOML encoder so that quotes and backslashes in the value survive.
func writeConfig(t *testing.T, value string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]string{"metrics_server": value}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMetricsServerFromFlagAndConfig(t *testing.T) {
	// Neither the developer's environment nor CI's may leak in.
	t.Setenv("KILN_METRICS_SERVER", "")
	t.Setenv("KILN_CONFIG", "")
	cases := testkit.ListenAddressCases(t, filepath.Join("..", "telemetry", "testdata", "listen_addresses.tsv"))
	for _, sub := range []string{"runner", "server"} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/line%d_%s", sub, c.Line, c.Input), func(t *testing.T) {
				check := func(route string, got string, err error) {
					t.Helper()
					if c.WantErr != "" {
						if err == nil {
							t.Fatalf("%s: %q accepted as %q, want an error containing %q", route, c.Input, got, c.WantErr)
						}
						if !strings.Contains(err.Error(), c.WantErr) {
							t.Fatalf("%s: error %q, want it to contain %q", route, err, c.WantErr)
						}
						return
					}
					if err != nil {
						t.Fatalf("%s: %q refused: %v", route, c.Input, err)
					}
					if got != c.Want {
						t.Fatalf("%s: %q gave %q, want %q", route, c.Input, got, c.Want)
					}
				}

				got, err := configure(t, sub, "--metrics-server="+c.Input)
				check("flag", got, err)

				cfg := writeConfig(t, c.Input)
				got, err = configure(t, sub, "--config", cfg)
				check("config.toml", got, err)
				if err != nil && (!strings.Contains(err.Error(), cfg) || !strings.Contains(err.Error(), `"metrics_server"`)) {
					t.Errorf("config.toml: error %q does not name the file and the key", err)
				}

				// The flag wins over the file, whichever of the two is bad.
				got, err = configure(t, sub, "--metrics-server="+c.Input, "--config", writeConfig(t, "127.0.0.2:1234"))
				check("flag over config.toml", got, err)
				got, err = configure(t, sub, "--metrics-server=[::1]:7777", "--config", cfg)
				if err != nil || got != "[::1]:7777" {
					t.Fatalf("flag [::1]:7777 over config.toml %q: got %q, %v", c.Input, got, err)
				}
			})
		}
	}
}

// TestMetricsServerOffByDefault: without flag, variable or key the
// listener stays off.
func TestMetricsServerOffByDefault(t *testing.T) {
	t.Setenv("KILN_METRICS_SERVER", "")
	t.Setenv("KILN_CONFIG", "")
	for _, sub := range []string{"runner", "server"} {
		if got, err := configure(t, sub); err != nil || got != "" {
			t.Errorf("kiln %s without --metrics-server: %q, %v; want off", sub, got, err)
		}
	}
}

// TestMetricsServerBadAddressExits runs the real binary: a bad address is
// a usage error at start-up, before anything else happens.
func TestMetricsServerBadAddressExits(t *testing.T) {
	env := cleanEnv(t)
	fails(t, env, cli.ExitUsage, `empty port after ":"`, "runner", "--server", "http://127.0.0.1:1", "--metrics-server", "localhost:")
	fails(t, env, cli.ExitUsage, "must be enclosed in brackets", "server", "--data-dir", t.TempDir(), "--metrics-server", "::1")
	cfg := writeConfig(t, "host:")
	r := fails(t, env, cli.ExitUsage, `key "metrics_server"`, "runner", "--server", "http://127.0.0.1:1", "--config", cfg)
	if !strings.Contains(r.stderr, "empty port") {
		t.Errorf("the config error does not say what is wrong: %s", r.stderr)
	}
}
