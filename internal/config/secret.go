package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// Secrets on a command line are visible to every local user (ps,
// /proc/PID/cmdline), and a process's environment to its user and root. A
// secret flag therefore has a companion that names a file holding the
// secret: --token has --token-file, which — like every flag — can also be
// set as KILN_TOKEN_FILE or token_file in the config file.

// secretFileOf is the annotation that marks a companion file flag with
// the secret flag it fills.
const secretFileOf = "kiln/secret-file-of"

// SecretFileFlag is the name of the companion of secret flag name.
func SecretFileFlag(name string) string { return name + "-file" }

// AddSecretFile gives the secret string flag name (already defined in
// flags) its companion --<name>-file, and says in name's help that the
// command line is visible to other local users. Apply reads the file (its
// content without the trailing line break) into name. Of the two, the
// source that ranks higher wins (command line, environment, config file);
// both from the same source is an error.
func AddSecretFile(flags *pflag.FlagSet, name string) {
	f := flags.Lookup(name)
	if f == nil {
		panic("config.AddSecretFile: no flag --" + name)
	}
	file := SecretFileFlag(name)
	f.Usage += fmt.Sprintf(" (a command line is visible to other local users: prefer --%s or %s)", file, EnvName(name))
	flags.String(file, "", fmt.Sprintf("file holding the value of --%s, so that it stays out of the process list (env %s)", name, EnvName(file)))
	_ = flags.SetAnnotation(file, secretFileOf, []string{name})
}

// source ranks where a flag's value came from.
type source int

const (
	sourceDefault source = iota
	sourceFile
	sourceEnv
	sourceCommandLine
)

// resolveSecretFiles reads the files of the companion flags that were set
// into their secret flags (see AddSecretFile).
func resolveSecretFiles(flags *pflag.FlagSet, sourceOf func(string) source, prefix, configPath string) error {
	var err error
	flags.VisitAll(func(f *pflag.Flag) {
		of := f.Annotations[secretFileOf]
		if err != nil || len(of) != 1 {
			return
		}
		name := of[0]
		fileSrc, valueSrc := sourceOf(f.Name), sourceOf(name)
		switch {
		case fileSrc == sourceDefault || fileSrc < valueSrc:
			return // no file, or the secret itself from a stronger source
		case fileSrc == valueSrc:
			err = fmt.Errorf("%s: give the secret or the file holding it, not both", sourcePair(fileSrc, name, f.Name, prefix, configPath))
			return
		}
		path := f.Value.String()
		data, rerr := os.ReadFile(path)
		if rerr != nil {
			err = fmt.Errorf("--%s %s: %w", f.Name, path, unwrapPath(rerr))
			return
		}
		secret := strings.TrimRight(string(data), "\r\n")
		if strings.TrimSpace(secret) == "" {
			err = fmt.Errorf("--%s %s: the file is empty", f.Name, path)
			return
		}
		if serr := flags.Set(name, secret); serr != nil {
			// never show the secret in the message
			err = fmt.Errorf("--%s %s: the file's content is not a valid --%s", f.Name, path, name)
		}
	})
	return err
}

// sourcePair names two flags as the source that gave them both.
func sourcePair(s source, name, file, prefix, configPath string) string {
	switch s {
	case sourceEnv:
		return envName(prefix, name) + " and " + envName(prefix, file)
	case sourceFile:
		return fmt.Sprintf("config file %s: %s and %s", configPath, Key(name), Key(file))
	}
	return "--" + name + " and --" + file
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
