package report_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/report"
)

// FuzzParseTarget: a target from the command line, the environment or the
// config file never makes ParseTarget panic, and a refusal never repeats
// the password of an s3:// URL's user part (a secret pasted by mistake).
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{
		"report.json", "/var/lib/kiln/reports/farm.json", "s3://kiln-reports/farm/",
		"s3://kiln-reports/farm/?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true&max_attempts=3",
		"s3://AKIA:secret-key-value@kiln-reports/", "s3://b/p?path_style=maybe", "s3://b/%zz", "https://example.com/r.json",
		"s3://b/p/?endpoint=https://a&endpoint=https://b", "s3://b/p?credentials_file=relative", "\x00", "s3://",
	} {
		f.Add(s)
	}
	f.Setenv("KILN_S3_ACCESS_KEY_ID", "fuzz-key-id")
	f.Setenv("KILN_S3_SECRET_ACCESS_KEY", "fuzz-secret")
	f.Fuzz(func(t *testing.T, s string) {
		if !strings.HasPrefix(s, "s3://") {
			return // a path: only stat is done, which the seeds cover
		}
		tg, err := report.ParseTarget(s)
		if err == nil {
			if strings.Contains(tg.String(), "fuzz-secret") {
				t.Fatalf("%q: the target's name shows the secret: %s", s, tg)
			}
			tg.Close()
			return
		}
		u, perr := url.Parse(s)
		if perr != nil || u.User == nil {
			return
		}
		if p, ok := u.User.Password(); ok && len(p) >= 4 && strings.Contains(err.Error(), p) {
			t.Fatalf("%q: the refusal repeats the password: %v", s, err)
		}
	})
}
