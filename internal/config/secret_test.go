package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestSecretFiles: every secret flag has a companion --X-file, settable
// like any flag (KILN_X_FILE, x_file in the config file), whose content is
// the secret, so that secrets need never be on a command line (visible to
// every local user) or in the environment.
func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "token")
	if err := os.WriteFile(secretFile, []byte("kiln_from_file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	conf := filepath.Join(dir, "kiln.toml")
	os.WriteFile(conf, []byte("token_file = \""+secretFile+"\"\n"), 0o600)

	for _, c := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantErr string
	}{
		{name: "the flag", args: []string{"--token-file", secretFile}, want: "kiln_from_file"},
		{name: "the environment", env: map[string]string{"KILN_TOKEN_FILE": secretFile}, want: "kiln_from_file"},
		{name: "the config file", args: []string{"--config", conf}, want: "kiln_from_file"},
		{name: "the secret itself still works", args: []string{"--token", "kiln_flag"}, want: "kiln_flag"},
		{name: "a flag beats a variable", args: []string{"--token", "kiln_flag"}, env: map[string]string{"KILN_TOKEN_FILE": secretFile}, want: "kiln_flag"},
		{name: "a file flag beats a variable", args: []string{"--token-file", secretFile}, env: map[string]string{"KILN_TOKEN": "kiln_env"}, want: "kiln_from_file"},
		{name: "a variable beats the config file", args: []string{"--config", conf}, env: map[string]string{"KILN_TOKEN": "kiln_env"}, want: "kiln_env"},
		{name: "both flags", args: []string{"--token", "kiln_flag", "--token-file", secretFile}, wantErr: "--token and --token-file"},
		{name: "both variables", env: map[string]string{"KILN_TOKEN": "x", "KILN_TOKEN_FILE": secretFile}, wantErr: "KILN_TOKEN and KILN_TOKEN_FILE"},
		{name: "a missing file", args: []string{"--token-file", filepath.Join(dir, "nope")}, wantErr: "--token-file"},
		{name: "an empty file", args: []string{"--token-file", empty}, wantErr: "is empty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var token string
			cmd := &cobra.Command{Use: "test", SilenceUsage: true, SilenceErrors: true, Args: cobra.NoArgs,
				PreRunE: func(cmd *cobra.Command, _ []string) error { return Apply(cmd, Options{LookupEnv: envMap(c.env)}) },
				RunE:    func(*cobra.Command, []string) error { return nil }}
			cmd.Flags().StringVar(&token, "token", "", "the token")
			AddSecretFile(cmd.Flags(), "token")
			cmd.Flags().String("config", "", "")
			cmd.SetArgs(append([]string{}, c.args...))
			err := cmd.Execute()
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("want an error about %q, got %v (token %q)", c.wantErr, err, token)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if token != c.want {
				t.Fatalf("token %q, want %q", token, c.want)
			}
		})
	}
	// the companion flag tells where to put the secret instead
	f := (&cobra.Command{}).Flags()
	f.String("token", "", "the token")
	AddSecretFile(f, "token")
	if u := f.Lookup("token").Usage; !strings.Contains(u, "other local users") || !strings.Contains(u, "--token-file") {
		t.Errorf("--token's help does not warn: %q", u)
	}
}
