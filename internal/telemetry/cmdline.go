package telemetry

import (
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
)

// redacted replaces a secret wherever kiln shows a command line.
const redacted = "xxxxx"

// secretName matches the names of flags and query parameters that carry
// secrets (--token, --webhook-secret, --password, ?api_key=…) but not
// those that name where a secret is (--token-file).
var secretName = regexp.MustCompile(`(?i)(token|secret|passw(or)?d|credential|api[-_]?key|private[-_]?key)$`)

// RedactArgs returns a copy of a command line with its secrets replaced:
// the values of flags whose names say they are secret ("--token T",
// "--webhook-secret=S"), and the passwords and secret query parameters of
// URLs in any argument (the password of --database postgres://u:p@h/db).
// What is not secret stays, so that the result still tells what runs.
func RedactArgs(args []string) []string {
	out := make([]string, len(args))
	secretNext := false
	for i, a := range args {
		switch {
		case secretNext:
			out[i] = redacted
			secretNext = false
			continue
		case strings.HasPrefix(a, "-") && a != "-" && a != "--":
			name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if secretName.MatchString(name) {
				if hasValue {
					out[i] = a[:len(a)-len(value)] + redacted
				} else {
					out[i] = a
					secretNext = i+1 < len(args)
				}
				continue
			}
			if hasValue {
				out[i] = a[:len(a)-len(value)] + redactURL(value)
				continue
			}
		}
		out[i] = redactURL(a)
	}
	return out
}

// redactURL hides the password and the secret query parameters of s when
// it is a URL with either; anything else is returned as it is.
func redactURL(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	changed := false
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), redacted)
		changed = true
	}
	if q := u.Query(); len(q) > 0 {
		for k := range q {
			if secretName.MatchString(k) {
				q.Set(k, redacted)
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	if !changed {
		return s
	}
	return u.String()
}

// cmdline serves the process's command line as net/http/pprof's Cmdline
// does (arguments separated by NUL bytes), with its secrets redacted: the
// internal listener has no authentication, and flags are how many people
// pass a --token.
func cmdline(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(strings.Join(RedactArgs(os.Args), "\x00")))
}
