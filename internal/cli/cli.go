// Package cli is the `kiln` command line: `kiln server`, `kiln version` and
// the admin subcommands (`kiln scope …`, `kiln workspace …`, `kiln token …`,
// …) that talk to a server's REST API.
//
// It holds only wiring: flags, configuration layering (internal/config),
// turning arguments into API calls (internal/client) and printing results.
// The behaviour lives in the packages it calls, so that it can be tested
// without a terminal, and the commands stay thin enough to read at a glance.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/internal/client"
	"github.com/kiln-build/kiln/internal/config"
	"github.com/kiln-build/kiln/internal/suggest"
)

// Exit codes of the kiln binary, so that scripts can tell a mistake in the
// command line from a failure of the operation.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// annotationConfig tells applyConfig how a command's flags are layered.
// Admin command groups are marked configClient: only their connection
// settings come from KILN_ variables and the client config file. Every
// other command (the server, kiln metrics, …) takes each of its flags from
// KILN_<FLAG> and, when it has --config, from that file.
const (
	annotationConfig = "kiln/config"
	configServer     = "server"
	configClient     = "client"
)

// clientFlags are the flags every admin command takes; only these are read
// from the client config file and from KILN_* variables, so that a stray
// KILN_SCOPE in the environment never changes what an admin command does.
var clientFlags = []string{"server", "token", "token-file", "output", "client-config"}

// usageError marks mistakes in the command line, which exit with ExitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Main runs the kiln command line with args (without the program name) and
// returns the process exit code. Errors are printed to stderr once, as
// "kiln: <message>".
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := New(stdout, stderr)
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	msg := strings.TrimPrefix(err.Error(), "kiln: ")
	var ue usageError
	if errors.As(err, &ue) || isCobraUsageError(msg) {
		path := "kiln"
		if cmd != nil {
			path = cmd.CommandPath()
		}
		fmt.Fprintf(stderr, "%s: %s\nRun '%s --help' for usage.\n", path, msg, path)
		return ExitUsage
	}
	fmt.Fprintf(stderr, "kiln: %s\n", msg)
	return ExitError
}

// isCobraUsageError recognises the command-line mistakes cobra reports
// with plain errors (unknown command, missing required flag), so that they
// exit with ExitUsage like the others.
func isCobraUsageError(msg string) bool {
	for _, p := range []string{"unknown command ", "required flag(s) ", "unknown flag: ", "unknown shorthand flag: ",
		"if any flags in the group ", "at least one of the flags in the group "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// New returns the root `kiln` command with every subcommand, printing to
// stdout and stderr.
func New(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "kiln",
		Short: "kiln: a self-hosted build farm built to be watched",
		Long: `kiln is a self-hosted build farm: a server that holds scopes, workspaces, users,
artifacts and a queue of work, and runners that take work and run it. Every
part of it speaks Prometheus/OpenMetrics.

Start a server with "kiln server"; manage it with the admin commands below,
which talk to its API with a token (--token-file, KILN_TOKEN or the client
config file; a --token on the command line is visible to other local users).`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: applyConfig,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{suggestFlag(c, err)} })
	root.CompletionOptions.DisableDefaultCmd = true

	root.AddCommand(
		newServerCommand(),
		newVersionCommand(),
		newScopeCommand(),
		newWorkspaceCommand(),
		newUserCommand(),
		newIdentityCommand(),
		newGroupCommand(),
		newTokenCommand(),
		newFileStoreCommand(),
		newPoolCommand(),
		newAssetCommand(),
		newCollectionCommand(),
		newRunnerCommand(),
		newWorkerCommand(),
		newWorkCommand(),
		newArtifactCommand(),
		newMetricsCommand(),
		newExpireCommand(),
		newReportCommand(),
		newDevCommand(),
		newTemplateCommand(),
		newWorkflowCommand(),
	)
	// cobra reports wrong arguments with plain errors; make them usage
	// errors everywhere. Commands with subcommands take no arguments of
	// their own: without a subcommand they show their help, and a word
	// that is no subcommand gets the same "did you mean" at every level.
	walk(root, func(c *cobra.Command) {
		if c.HasSubCommands() {
			c.Args = subcommandArgs
			if c.RunE == nil && c.Run == nil {
				c.RunE = helpOnly
			}
		}
		if c.Args != nil {
			check := c.Args
			c.Args = func(cmd *cobra.Command, args []string) error {
				if err := check(cmd, args); err != nil {
					return usageError{err}
				}
				return nil
			}
		}
	})
	return root
}

// subcommandArgs is the argument check of commands that have
// subcommands: any argument is a subcommand that does not exist, reported
// with the nearest one that does.
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	var names []string
	for _, sub := range cmd.Commands() {
		if sub.IsAvailableCommand() {
			names = append(names, sub.Name())
		}
	}
	return usageError{fmt.Errorf("unknown command %q for %q%s", args[0], cmd.CommandPath(), didYouMean(args[0], names))}
}

// suggestFlag adds the nearest flag of cmd to pflag's "unknown flag:
// --name" errors; other flag errors pass unchanged.
func suggestFlag(cmd *cobra.Command, err error) error {
	name, ok := strings.CutPrefix(err.Error(), "unknown flag: --")
	if !ok {
		return err
	}
	var names []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			names = append(names, f.Name)
		}
	})
	if hint := didYouMean(name, names); hint != "" {
		return fmt.Errorf("%w%s", err, hint)
	}
	return err
}

// didYouMean is ` (did you mean "x"?)` when a known name is a plausible
// typo of word, as configuration keys and template fields say it.
func didYouMean(word string, known []string) string {
	if best, ok := suggest.Closest(word, known, 2); ok {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		walk(sub, fn)
	}
}

// applyConfig layers the environment and the config files under the
// command-line flags (see internal/config): the server's flags from
// KILN_<FLAG> and --config, an admin command's connection settings from
// KILN_SERVER, KILN_TOKEN, KILN_OUTPUT and the client config file.
func applyConfig(cmd *cobra.Command, _ []string) error {
	var err error
	switch configKind(cmd) {
	case configClient:
		err = config.Apply(cmd, config.Options{
			FileFlag:    "client-config",
			DefaultFile: defaultClientConfig(),
			Only:        clientFlags,
		})
		if err == nil {
			warnReadable(cmd)
		}
	default:
		// The server and the commands that work on its database directly
		// (kiln metrics recount): every flag from KILN_<FLAG>, and from the
		// --config file for commands that have one; but for flags marked
		// commandLineOnly.
		err = config.Apply(cmd, config.Options{Only: configurable(cmd)})
	}
	if err != nil {
		return usageError{err}
	}
	return nil
}

// commandLineOnly marks a flag that applyConfig leaves to the command
// line: one whose KILN_<FLAG> variable means something else to other
// commands (kiln report --output is a file, KILN_OUTPUT the admin
// commands' output format).
const commandLineOnly = "kiln/command-line-only"

// configurable returns the flags of cmd that applyConfig may set, or nil
// for all of them.
func configurable(cmd *cobra.Command) []string {
	var names []string
	marked := false
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if _, ok := f.Annotations[commandLineOnly]; ok {
			marked = true
			return
		}
		names = append(names, f.Name)
	})
	if !marked {
		return nil
	}
	return names
}

// configKind returns the annotation of cmd or of its nearest ancestor.
func configKind(cmd *cobra.Command) string {
	for c := cmd; c != nil; c = c.Parent() {
		if kind := c.Annotations[annotationConfig]; kind != "" {
			return kind
		}
	}
	return ""
}

// warnReadable warns when the client config file, which usually holds a
// token, can be read by other users.
func warnReadable(cmd *cobra.Command) {
	path := defaultClientConfig()
	if f := cmd.Flags().Lookup("client-config"); f != nil && f.Value.String() != "" {
		path = f.Value.String()
	}
	if path == "" {
		return
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "kiln: warning: %s can be read by other users and may hold a token; run: chmod 600 %s\n", path, path)
	}
}

// defaultClientConfig is $XDG_CONFIG_HOME/kiln/client.toml (by default
// ~/.config/kiln/client.toml), or "" when there is no home directory.
func defaultClientConfig() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "kiln", "client.toml")
}

// clientOptions are the connection and output settings of an admin command.
type clientOptions struct {
	server string
	token  string
	output string
	config string
}

// addClientFlags gives an admin command group its connection flags, marks
// it so that applyConfig reads the client settings for it, and returns the
// settings its subcommands will see.
func addClientFlags(cmd *cobra.Command) *clientOptions {
	o := &clientOptions{}
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[annotationConfig] = configClient
	f := cmd.PersistentFlags()
	f.StringVar(&o.server, "server", client.DefaultServer, "URL of the kiln server (env KILN_SERVER)")
	f.StringVar(&o.token, "token", "", "API token")
	config.AddSecretFile(f, "token")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json (env KILN_OUTPUT)")
	f.StringVar(&o.config, "client-config", "", "client config file with server and token keys (env KILN_CLIENT_CONFIG; default $XDG_CONFIG_HOME/kiln/client.toml)")
	return o
}
