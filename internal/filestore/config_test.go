package filestore_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/filestore"
	"github.com/kiln-build/kiln/internal/model"
)

// fixtures reads testdata/s3config/<kind>/*.json.
func fixtures(t testing.TB, kind string) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "s3config", kind, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no %s fixtures: %v", kind, err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = b
	}
	return out
}

// TestS3ConfigGood: every good fixture parses, and its canonical form
// parses back to the same configuration.
func TestS3ConfigGood(t *testing.T) {
	for name, raw := range fixtures(t, "good") {
		c, err := filestore.ParseS3Config(raw)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		canon, err := filestore.ParseConfig(model.BackendS3, raw)
		if err != nil {
			t.Fatal(err)
		}
		again, err := filestore.ParseS3Config(canon)
		if err != nil || !reflect.DeepEqual(c, again) {
			t.Errorf("%s: canonical form %s reads back as %+v (%v)", name, canon, again, err)
		}
	}
}

// TestS3ConfigBad: every bad fixture is refused with a *ConfigError on
// the key its name starts with ("_" for the whole object).
func TestS3ConfigBad(t *testing.T) {
	for name, raw := range fixtures(t, "bad") {
		field, _, _ := strings.Cut(name, ".")
		if field == "_" {
			field = ""
		}
		_, err := filestore.ParseS3Config(raw)
		var ce *filestore.ConfigError
		if !errors.As(err, &ce) || ce.Field != field {
			t.Errorf("%s: want a ConfigError on %q, got %#v", name, field, err)
			continue
		}
		if strings.HasSuffix(name, ".secret") && !strings.Contains(ce.Message, "never stores S3 credentials") {
			t.Errorf("%s: a secret must be refused saying how to pass credentials, got %q", name, ce.Message)
		}
	}
}

func TestLocalConfig(t *testing.T) {
	for raw, field := range map[string]string{
		`{"base_directory": "/srv/kiln"}`: "-",
		`{}`:                              "base_directory",
		`{"base_directory": "files"}`:     "base_directory",
		`{"base_directory": "/srv", "bucket": "x"}`:         "bucket",
		`{"base_directory": "/srv", "password": "hunter2"}`: "password",
	} {
		_, err := filestore.ParseLocalConfig(json.RawMessage(raw))
		var ce *filestore.ConfigError
		switch {
		case field == "-" && err != nil:
			t.Errorf("%s: %v", raw, err)
		case field != "-" && (!errors.As(err, &ce) || ce.Field != field):
			t.Errorf("%s: want a ConfigError on %s, got %v", raw, field, err)
		}
	}
}

func TestRedact(t *testing.T) {
	in := `{"endpoint": "https://AKIA:s3cr3t@s3.example.org", "bucket": "b", "secret_access_key": "s3cr3t", "aws_session_token": "tok"}`
	out := string(filestore.Redact(json.RawMessage(in)))
	if strings.Contains(out, "s3cr3t") || strings.Contains(out, "tok\"") || strings.Contains(out, "AKIA") {
		t.Fatalf("secrets left in %s", out)
	}
	if !strings.Contains(out, `"bucket":"b"`) || !strings.Contains(out, "s3.example.org") {
		t.Fatalf("redaction lost plain values: %s", out)
	}
	clean := `{"endpoint": "https://s3.example.org", "bucket": "b", "credentials_file": "/etc/k"}`
	if got := string(filestore.Redact(json.RawMessage(clean))); got != clean {
		t.Fatalf("a clean configuration was changed: %s", got)
	}
}

// FuzzParseS3Config: no input panics; an accepted configuration holds no
// secret-looking key and its canonical form reads back the same; a refusal
// is a *ConfigError.
func FuzzParseS3Config(f *testing.F) {
	for _, kind := range []string{"good", "bad"} {
		for _, raw := range fixtures(f, kind) {
			f.Add(raw)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := filestore.ParseS3Config(raw)
		if err != nil {
			var ce *filestore.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("%q: not a ConfigError: %v", raw, err)
			}
			return
		}
		canon, err := filestore.ParseConfig(model.BackendS3, raw)
		if err != nil {
			t.Fatalf("%q parses but not canonically: %v", raw, err)
		}
		again, err := filestore.ParseS3Config(canon)
		if err != nil || !reflect.DeepEqual(c, again) {
			t.Fatalf("%q: canonical form %s reads back as %+v (%v)", raw, canon, again, err)
		}
	})
}
