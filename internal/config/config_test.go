package config

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// settings is what the test command saw after Apply.
type settings struct {
	Listen       string
	DataDir      string
	LocalRunners int
	Debug        bool
	Timeout      time.Duration
	Tags         []string
}

// newCommand returns a command with one flag of every kind kiln uses, and
// the settings it fills when run.
func newCommand(opts Options, got *settings) *cobra.Command {
	cmd := &cobra.Command{
		Use:           "test",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		PreRunE:       func(cmd *cobra.Command, _ []string) error { return Apply(cmd, opts) },
		RunE:          func(*cobra.Command, []string) error { return nil },
	}
	f := cmd.Flags()
	f.StringVar(&got.Listen, "listen", "127.0.0.1:8420", "")
	f.StringVar(&got.DataDir, "data-dir", "./kiln-data", "")
	f.IntVar(&got.LocalRunners, "local-runners", 0, "")
	f.BoolVar(&got.Debug, "debug", false, "")
	f.DurationVar(&got.Timeout, "timeout", 30*time.Second, "")
	f.StringSliceVar(&got.Tags, "tags", nil, "")
	f.String("config", "", "")
	return cmd
}

func run(t *testing.T, opts Options, args []string) (settings, error) {
	t.Helper()
	var got settings
	cmd := newCommand(opts, &got)
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	cmd.SetArgs(args)
	err := cmd.Execute()
	return got, err
}

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

var defaults = settings{Listen: "127.0.0.1:8420", DataDir: "./kiln-data", Timeout: 30 * time.Second}

func TestApplyPrecedence(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		opts Options
		want settings
	}{
		{name: "defaults", want: defaults},
		{
			name: "empty file keeps defaults",
			args: []string{"--config", "testdata/empty.toml"},
			want: defaults,
		},
		{
			name: "file sets every kind of value",
			args: []string{"--config", "testdata/full.toml"},
			want: settings{Listen: "0.0.0.0:9000", DataDir: "/srv/kiln", LocalRunners: 2, Debug: true,
				Timeout: 90 * time.Second, Tags: []string{"a", "b"}},
		},
		{
			name: "environment sets every kind of value",
			env: map[string]string{"KILN_LISTEN": "[::1]:1", "KILN_DATA_DIR": "/env", "KILN_LOCAL_RUNNERS": "3",
				"KILN_DEBUG": "true", "KILN_TIMEOUT": "1m", "KILN_TAGS": "x,y"},
			want: settings{Listen: "[::1]:1", DataDir: "/env", LocalRunners: 3, Debug: true,
				Timeout: time.Minute, Tags: []string{"x", "y"}},
		},
		{
			name: "environment beats file",
			args: []string{"--config", "testdata/partial.toml"},
			env:  map[string]string{"KILN_DATA_DIR": "/from/env"},
			want: settings{Listen: "127.0.0.1:1111", DataDir: "/from/env", Timeout: 30 * time.Second},
		},
		{
			name: "flag beats environment and file",
			args: []string{"--config", "testdata/partial.toml", "--data-dir", "/from/flag", "--listen", "127.0.0.1:2222"},
			env:  map[string]string{"KILN_DATA_DIR": "/from/env"},
			want: settings{Listen: "127.0.0.1:2222", DataDir: "/from/flag", Timeout: 30 * time.Second},
		},
		{
			name: "flag set to its default still wins",
			args: []string{"--config", "testdata/full.toml", "--local-runners", "0", "--debug=false"},
			env:  map[string]string{"KILN_TIMEOUT": "5s"},
			want: settings{Listen: "0.0.0.0:9000", DataDir: "/srv/kiln", Timeout: 5 * time.Second, Tags: []string{"a", "b"}},
		},
		{
			name: "flag beats file for lists",
			args: []string{"--config", "testdata/full.toml", "--tags", "z"},
			want: settings{Listen: "0.0.0.0:9000", DataDir: "/srv/kiln", LocalRunners: 2, Debug: true,
				Timeout: 90 * time.Second, Tags: []string{"z"}},
		},
		{
			name: "config path from the environment",
			env:  map[string]string{"KILN_CONFIG": "testdata/partial.toml"},
			want: settings{Listen: "127.0.0.1:1111", DataDir: "/from/file", Timeout: 30 * time.Second},
		},
		{
			name: "empty variable counts as unset",
			args: []string{"--config", "testdata/partial.toml"},
			env:  map[string]string{"KILN_DATA_DIR": ""},
			want: settings{Listen: "127.0.0.1:1111", DataDir: "/from/file", Timeout: 30 * time.Second},
		},
		{
			name: "other prefix",
			env:  map[string]string{"KILN_LISTEN": "ignored:1", "RUNNER_LISTEN": "127.0.0.1:3"},
			opts: Options{EnvPrefix: "RUNNER_"},
			want: settings{Listen: "127.0.0.1:3", DataDir: "./kiln-data", Timeout: 30 * time.Second},
		},
		{
			name: "missing default file is fine",
			opts: Options{DefaultFile: "testdata/does-not-exist.toml"},
			want: defaults,
		},
		{
			name: "default file is read",
			opts: Options{DefaultFile: "testdata/partial.toml"},
			want: settings{Listen: "127.0.0.1:1111", DataDir: "/from/file", Timeout: 30 * time.Second},
		},
		{
			name: "explicit file replaces default file",
			args: []string{"--config", "testdata/empty.toml"},
			opts: Options{DefaultFile: "testdata/partial.toml"},
			want: defaults,
		},
		{
			name: "only: other flags ignore environment",
			env:  map[string]string{"KILN_LISTEN": "127.0.0.1:4", "KILN_DATA_DIR": "/env"},
			opts: Options{Only: []string{"listen", "config"}},
			want: settings{Listen: "127.0.0.1:4", DataDir: "./kiln-data", Timeout: 30 * time.Second},
		},
		{
			name: "other file flag",
			args: []string{"--config", "testdata/full.toml"},
			env:  map[string]string{"KILN_CLIENT_CONFIG": "testdata/partial.toml"},
			opts: Options{FileFlag: "client-config", Only: []string{"listen", "data-dir"}},
			// the command has no --client-config flag, so no file is read;
			// --config is not in scope and is just an ordinary flag here
			want: defaults,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.LookupEnv = envMap(tt.env)
			got, err := run(t, opts, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if !equal(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func equal(a, b settings) bool {
	return a.Listen == b.Listen && a.DataDir == b.DataDir && a.LocalRunners == b.LocalRunners &&
		a.Debug == b.Debug && a.Timeout == b.Timeout && strings.Join(a.Tags, ",") == strings.Join(b.Tags, ",")
}

// TestApplyBadFiles runs every fixture in testdata/bad and checks that the
// error names what is wrong. Each fixture must have an expectation here, so
// a new fixture cannot be added without saying what it must produce.
func TestApplyBadFiles(t *testing.T) {
	want := map[string][]string{
		"unknown_key_typo.toml": {`unknown key "lisen"`, `did you mean "listen"?`},
		"unknown_key.toml":      {`unknown key "colour"`},
		"dash_key.toml":         {`unknown key "data-dir"`, `did you mean "data_dir"?`},
		"invalid_int.toml":      {`key "local_runners"`, `invalid value "many" for --local-runners`},
		"invalid_duration.toml": {`key "timeout"`, `invalid value "soon" for --timeout`},
		"list_for_scalar.toml":  {`key "listen"`, "single value, not a list"},
		"table.toml":            {`key "listen"`, "table"},
		"syntax.toml":           {"syntax.toml", "line 1"},
		"config_key.toml":       {`key "config" cannot be set in the config file itself`},
		// strict like every input from outside (docs/architecture.md#security)
		"nul.toml":           {`key "data_dir"`, "NUL"},
		"nul_in_list.toml":   {`key "tags"`, "NUL"},
		"duplicate_key.toml": {"line 2", `"listen"`, "already been defined"},
		"invalid_utf8.toml":  {"line 1", "UTF-8"},
	}
	files, err := filepath.Glob("testdata/bad/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	if len(files) != len(want) {
		t.Errorf("%d fixtures in testdata/bad, %d expectations", len(files), len(want))
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			subs, ok := want[name]
			if !ok {
				t.Fatalf("no expectation for %s", path)
			}
			_, err := run(t, Options{LookupEnv: envMap(nil)}, []string{"--config", path})
			if err == nil {
				t.Fatalf("Apply accepted %s", path)
			}
			for _, s := range subs {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
		})
	}
}

func TestApplyErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		opts Options
		want []string
	}{
		{
			name: "invalid environment value",
			env:  map[string]string{"KILN_LOCAL_RUNNERS": "two"},
			want: []string{"environment variable KILN_LOCAL_RUNNERS", `invalid value "two" for --local-runners`},
		},
		{
			name: "invalid environment bool",
			env:  map[string]string{"KILN_DEBUG": "yes please"},
			want: []string{"KILN_DEBUG", "--debug"},
		},
		{
			name: "missing explicit file",
			args: []string{"--config", "testdata/does-not-exist.toml"},
			want: []string{"config file", "does-not-exist.toml", "no such file"},
		},
		{
			name: "missing file named in the environment",
			env:  map[string]string{"KILN_CONFIG": "testdata/nope.toml"},
			want: []string{"nope.toml", "no such file"},
		},
		{
			name: "key of a flag outside Only is unknown",
			args: []string{"--config", "testdata/partial.toml"},
			opts: Options{Only: []string{"listen", "config"}},
			want: []string{`unknown key "data_dir"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.LookupEnv = envMap(tt.env)
			_, err := run(t, opts, tt.args)
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

// TestApplyRequiredFlags checks that a value from the
// environment or the file satisfies cobra's required-flag check.
func TestApplyRequiredFlags(t *testing.T) {
	var got settings
	cmd := newCommand(Options{LookupEnv: envMap(map[string]string{"KILN_DATA_DIR": "/env"})}, &got)
	if err := cmd.MarkFlagRequired("data-dir"); err != nil {
		t.Fatal(err)
	}
	cmd.SetArgs([]string{})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("required flag from the environment: %v", err)
	}
}

func TestApplyReadsProcessEnvironment(t *testing.T) {
	t.Setenv("KILN_LISTEN", "127.0.0.1:5")
	got, err := run(t, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Listen != "127.0.0.1:5" {
		t.Errorf("listen = %q", got.Listen)
	}
}

func TestApplyUnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file")
	}
	path := filepath.Join(t.TempDir(), "secret.toml")
	if err := os.WriteFile(path, []byte("listen = \"x\"\n"), 0o000); err != nil {
		t.Fatal(err)
	}
	// Unreadable is not missing: even a default file must then fail.
	_, err := run(t, Options{LookupEnv: envMap(nil), DefaultFile: path}, nil)
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("err = %v", err)
	}
}

func TestNames(t *testing.T) {
	for _, tt := range []struct{ flag, env, key string }{
		{"listen", "KILN_LISTEN", "listen"},
		{"data-dir", "KILN_DATA_DIR", "data_dir"},
		{"metrics-server", "KILN_METRICS_SERVER", "metrics_server"},
		{"local-runners", "KILN_LOCAL_RUNNERS", "local_runners"},
	} {
		if got := EnvName(tt.flag); got != tt.env {
			t.Errorf("EnvName(%q) = %q, want %q", tt.flag, got, tt.env)
		}
		if got := Key(tt.flag); got != tt.key {
			t.Errorf("Key(%q) = %q, want %q", tt.flag, got, tt.key)
		}
	}
}

func ExampleEnvName() {
	fmt.Println(EnvName("data-dir"), Key("data-dir"))
	// Output: KILN_DATA_DIR data_dir
}

func ExampleApply() {
	var dataDir string
	cmd := &cobra.Command{
		Use: "server",
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			// In kiln, LookupEnv is left nil: the process environment.
			env := map[string]string{"KILN_DATA_DIR": "/var/lib/kiln"}
			return Apply(cmd, Options{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
		},
		RunE: func(*cobra.Command, []string) error { fmt.Println("data dir:", dataDir); return nil },
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "./kiln-data", "")
	cmd.Flags().String("config", "", "")
	cmd.SetArgs([]string{})
	_ = cmd.Execute()
	// Output: data dir: /var/lib/kiln
}
