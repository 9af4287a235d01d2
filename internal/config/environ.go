package config

import "strings"

// WithoutKilnSettings returns environ minus every variable that would
// configure a kiln process (DefaultEnvPrefix): what a process kiln starts —
// a task's script, a runner of a pool, a benchmark's server — inherits, so
// that it is configured only by what its starter gives it and never sees
// its starter's secrets (KILN_TOKEN, KILN_DATABASE…). environ is not
// changed.
func WithoutKilnSettings(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		if !strings.HasPrefix(kv, DefaultEnvPrefix) {
			out = append(out, kv)
		}
	}
	return out
}
