package cli_test

import (
	"bufio"
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
)

// addressCase is one row of internal/telemetry/testdata/listen_addresses.tsv,
// the table telemetry.ParseListenAddress is tested with. This file runs the
// very same rows through the command line and the config file of the
// commands that take --metrics-server, so that the three can never
// disagree (SPEC §4: flag and config.toml, tested from one table).
type addressCase struct {
	line    int
	input   string
	want    string // the normalised address, or "" when an error is expected
	wantErr string
}

func readAddressCases(t *testing.T) []addressCase {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "telemetry", "testdata", "listen_addresses.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []addressCase
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		input, want, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("listen_addresses.tsv:%d: no TAB in %q", n, line)
		}
		c := addressCase{line: n, input: input}
		if sub, isErr := strings.CutPrefix(want, "error: "); isErr {
			c.wantErr = sub
		} else {
			c.want = want
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases in listen_addresses.tsv", len(cases))
	}
	return cases
}

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
	cases := readAddressCases(t)
	for _, sub := range []string{"runner", "server"} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/line%d_%s", sub, c.line, c.input), func(t *testing.T) {
				check := func(route string, got string, err error) {
					t.Helper()
					if c.wantErr != "" {
						if err == nil {
							t.Fatalf("%s: %q accepted as %q, want an error containing %q", route, c.input, got, c.wantErr)
						}
						if !strings.Contains(err.Error(), c.wantErr) {
							t.Fatalf("%s: error %q, want it to contain %q", route, err, c.wantErr)
						}
						return
					}
					if err != nil {
						t.Fatalf("%s: %q refused: %v", route, c.input, err)
					}
					if got != c.want {
						t.Fatalf("%s: %q gave %q, want %q", route, c.input, got, c.want)
					}
				}

				got, err := configure(t, sub, "--metrics-server="+c.input)
				check("flag", got, err)

				cfg := writeConfig(t, c.input)
				got, err = configure(t, sub, "--config", cfg)
				check("config.toml", got, err)
				if err != nil && (!strings.Contains(err.Error(), cfg) || !strings.Contains(err.Error(), `"metrics_server"`)) {
					t.Errorf("config.toml: error %q does not name the file and the key", err)
				}

				// The flag wins over the file, whichever of the two is bad.
				got, err = configure(t, sub, "--metrics-server="+c.input, "--config", writeConfig(t, "127.0.0.2:1234"))
				check("flag over config.toml", got, err)
				got, err = configure(t, sub, "--metrics-server=[::1]:7777", "--config", cfg)
				if err != nil || got != "[::1]:7777" {
					t.Fatalf("flag [::1]:7777 over config.toml %q: got %q, %v", c.input, got, err)
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
