// Package config layers kiln's configuration sources over cobra flags, so
// that every flag of every command can also be set from the environment and
// from a TOML file without any per-flag code:
//
//	command-line flag  >  KILN_* environment variable  >  TOML config file  >  flag default
//
// The names are derived, never declared: the flag --data-dir is the variable
// KILN_DATA_DIR and the file key data_dir. A flag added to a command is
// therefore configurable in all three ways at once, and the documentation
// (README's configuration table) can be generated from the flag set.
//
// Values from the environment and the file go through the flag's own parser
// (pflag.Value.Set), so a duration, a size or a boolean is validated the same
// way whatever its source, and errors name the source: the variable or the
// file and key. Unknown keys in a file are an error naming the key, because a
// misspelt key that is silently ignored is the most common way a setting
// "does not work".
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	suggestpkg "github.com/kiln-build/kiln/internal/suggest"
)

// DefaultEnvPrefix starts the name of every environment variable kiln reads
// for a flag, so that kiln's variables neither collide with other programs'
// nor are picked up by accident.
const DefaultEnvPrefix = "KILN_"

// DefaultFileFlag is the flag that names the config file of a command
// (`kiln server --config kiln.toml`), as docs/architecture.md#conventions fixes it.
const DefaultFileFlag = "config"

// Options says where Apply looks. The zero value is what kiln's commands
// use: KILN_ variables from the process environment and the file named by
// --config.
type Options struct {
	// EnvPrefix is prepended to the upper-cased flag name; "" means
	// DefaultEnvPrefix.
	EnvPrefix string
	// LookupEnv reads a variable; nil means os.LookupEnv. Tests pass a map.
	LookupEnv func(string) (string, bool)
	// FileFlag names the flag holding the config file's path; "" means
	// DefaultFileFlag. The flag itself is never read from the file, only
	// from the command line or the environment.
	FileFlag string
	// DefaultFile is read when FileFlag is unset or empty. Unlike a file
	// named explicitly, it may be missing: it is for per-user locations such
	// as $XDG_CONFIG_HOME/kiln/client.toml.
	DefaultFile string
	// Only restricts Apply to these flags (by name); nil means every flag of
	// the command. Keys of other flags are then unknown in the file, and
	// their variables are not read. The admin commands use it so that only
	// the connection settings come from the client config, never a --scope
	// that would silently change what a command does.
	Only []string
}

// EnvName returns the environment variable that sets flag name with the
// default prefix: "data-dir" → "KILN_DATA_DIR".
func EnvName(name string) string { return envName(DefaultEnvPrefix, name) }

func envName(prefix, name string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Key returns the config-file key that sets flag name: "data-dir" →
// "data_dir". TOML bare keys may contain '-', but '_' keeps the keys of kiln's
// files and the names of its variables recognisably the same.
func Key(name string) string { return strings.ReplaceAll(name, "-", "_") }

// Apply sets every flag of cmd that was not given on the command line from
// its environment variable or, failing that, from the config file. It must
// run after cobra has parsed the flags (in a PersistentPreRunE, for
// instance); flags set by Apply count as changed, so cobra's required-flag
// check accepts them.
//
// It fails, changing nothing further, on a value a flag's parser rejects
// (naming the variable or the file and key), on a config file that cannot be
// read or parsed, and on a key in the file that is not a flag of cmd (naming
// the key and, when there is one, the flag it probably meant).
func Apply(cmd *cobra.Command, opts Options) error {
	prefix := opts.EnvPrefix
	if prefix == "" {
		prefix = DefaultEnvPrefix
	}
	lookup := opts.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	fileFlag := opts.FileFlag
	if fileFlag == "" {
		fileFlag = DefaultFileFlag
	}
	flags := cmd.Flags()
	inScope := scope(flags, opts.Only)
	onCommandLine := map[string]bool{}
	flags.Visit(func(f *pflag.Flag) { onCommandLine[f.Name] = true })

	// The environment first, the file flag included, since the file's path
	// may itself come from a variable.
	fromEnv := map[string]bool{}
	var err error
	flags.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || !inScope(f.Name) {
			return
		}
		name := envName(prefix, f.Name)
		v, ok := lookup(name)
		// An empty variable counts as unset: CI templates and shells export
		// empty variables far more often than anyone means "set to empty".
		if !ok || v == "" {
			return
		}
		if serr := flags.Set(f.Name, v); serr != nil {
			err = fmt.Errorf("environment variable %s: invalid value %q for --%s: %w", name, v, f.Name, unwrapSet(serr))
			return
		}
		fromEnv[f.Name] = true
	})
	if err != nil {
		return err
	}

	path, explicit := "", false
	if f := flags.Lookup(fileFlag); f != nil {
		path = f.Value.String()
		explicit = path != ""
	}
	if path == "" {
		path = opts.DefaultFile
	}
	if path != "" {
		values, err := readFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist) && !explicit:
		case err != nil:
			return err
		default:
			if err := applyFile(flags, path, values, fileFlag, inScope); err != nil {
				return err
			}
		}
	}
	sourceOf := func(name string) source {
		f := flags.Lookup(name)
		switch {
		case onCommandLine[name]:
			return sourceCommandLine
		case fromEnv[name]:
			return sourceEnv
		case f != nil && f.Changed:
			return sourceFile
		}
		return sourceDefault
	}
	return resolveSecretFiles(flags, sourceOf, prefix, path)
}

// scope returns the filter of flags Apply may touch. The help flag, which
// cobra adds to every command, is never configurable.
func scope(flags *pflag.FlagSet, only []string) func(string) bool {
	allowed := map[string]bool{}
	for _, n := range only {
		allowed[n] = true
	}
	return func(name string) bool {
		if name == "help" {
			return false
		}
		return only == nil || allowed[name]
	}
}

// readFile decodes a TOML file into its top-level keys.
func readFile(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	values := map[string]any{}
	if _, err := toml.Decode(string(data), &values); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return values, nil
}

// applyFile sets the flags not already set from the file's values. Keys are
// checked in sorted order so that the first error is the same on every run.
func applyFile(flags *pflag.FlagSet, path string, values map[string]any, fileFlag string, inScope func(string) bool) error {
	byKey := map[string]*pflag.Flag{}
	var known []string
	flags.VisitAll(func(f *pflag.Flag) {
		if f.Name != fileFlag && inScope(f.Name) {
			byKey[Key(f.Name)] = f
			known = append(known, Key(f.Name))
		}
	})
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f, ok := byKey[k]
		if !ok {
			if k == Key(fileFlag) {
				return fmt.Errorf("config file %s: key %q cannot be set in the config file itself", path, k)
			}
			msg := fmt.Sprintf("config file %s: unknown key %q", path, k)
			if s := suggest(k, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			return errors.New(msg)
		}
		if f.Changed {
			continue // the command line or the environment wins
		}
		if err := setFromTOML(flags, f, values[k]); err != nil {
			return fmt.Errorf("config file %s: key %q: %w", path, k, err)
		}
	}
	return nil
}

// setFromTOML converts a decoded TOML value to the flag's textual form and
// sets it. Arrays fill slice flags; tables are refused, since no flag takes
// one.
func setFromTOML(flags *pflag.FlagSet, f *pflag.Flag, v any) error {
	if list, ok := v.([]any); ok {
		sv, ok := f.Value.(pflag.SliceValue)
		if !ok {
			return fmt.Errorf("--%s takes a single value, not a list", f.Name)
		}
		items := make([]string, len(list))
		for i, item := range list {
			s, err := scalar(item)
			if err != nil {
				return fmt.Errorf("item %d: %w", i+1, err)
			}
			items[i] = s
		}
		if err := sv.Replace(items); err != nil {
			return fmt.Errorf("invalid value for --%s: %w", f.Name, err)
		}
		f.Changed = true
		return nil
	}
	s, err := scalar(v)
	if err != nil {
		return err
	}
	if err := flags.Set(f.Name, s); err != nil {
		return fmt.Errorf("invalid value %q for --%s: %w", s, f.Name, unwrapSet(err))
	}
	return nil
}

// scalar renders a TOML scalar as the flag parser expects it. A string
// with a NUL character (TOML's \u0000 escape; the raw byte is a syntax
// error already) is refused: no flag takes one, and the paths and URLs
// they take would be cut at it.
func scalar(v any) (string, error) {
	switch x := v.(type) {
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			return "", errors.New("a value must not contain NUL characters (\\u0000)")
		}
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			return strconv.FormatInt(int64(x), 10), nil
		}
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case map[string]any:
		return "", errors.New("a table is not a valid value here")
	default:
		// dates and times: kiln's flags take durations, not instants
		return "", fmt.Errorf("unsupported value of type %T (quote it as a string)", v)
	}
}

// unwrapSet strips pflag's generic wrapper ("invalid argument ... for ...
// flag: ...") which would repeat what our message already says.
func unwrapSet(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

// suggest returns the known key nearest to k (two edits at most, or
// a plausible typo), or "".
func suggest(k string, known []string) string {
	best, _ := suggestpkg.Closest(k, known, 2)
	return best
}
