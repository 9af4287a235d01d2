package report_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/report"
	"github.com/kiln-build/kiln/internal/testpeers"
)

// TestParseTargetRefuses: each bad target is refused with a message that
// says what to fix, and never repeats the target, which may hold a secret
// given by mistake.
func TestParseTargetRefuses(t *testing.T) {
	t.Setenv("KILN_S3_ACCESS_KEY_ID", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("KILN_S3_SECRET_ACCESS_KEY", "")
	dir := t.TempDir()
	for _, c := range []struct{ target, want string }{
		{"", "no report target"},
		{"  ", "no report target"},
		{"https://reports.example.com/x.json", "https:// is not a kind of report target"},
		{dir, "is a directory"},
		{dir + "/", "is a directory"},
		{filepath.Join(dir, "missing", "r.json"), "does not exist: create it first"},
		{"s3://AKIAEXAMPLE:hunter2hunter2@bucket/p/", "must not carry credentials"},
		{"s3://bucket/p/?secret_access_key=hunter2hunter2", "unknown setting; an s3:// target takes"},
		{"s3://bucket/p/?endpoint=ftp://s3.example.com", `endpoint: "ftp://s3.example.com" is not an http:// or https:// URL`},
		{"s3://bucket/p/?endpoint=https://a&endpoint=https://b", "endpoint: give it once"},
		{"s3://bucket/p/?path_style=sometimes", `path_style: want true or false, not "sometimes"`},
		{"s3://bucket/p/?max_attempts=99", "max_attempts: 99 is outside 1 to 20"},
		{"s3://bucket/p/?presigned_downloads=true", "applies to file stores, not to reports"},
		{"s3://bucket/p/?bucket=other", "part of the URL"},
		{"s3:///p/?endpoint=https://s3.example.com", "bucket: an S3 file store needs a bucket"},
		{"s3://Bad_Bucket/?endpoint=https://s3.example.com", "bucket: \"Bad_Bucket\" may hold lower-case letters"},
		{"s3://bucket/p/?endpoint=https://s3.example.com", "no S3 credentials"},
		{"s3://bucket/p/?endpoint=https://s3.example.com&credentials_file=/nonexistent/creds", "credentials_file: cannot read the credentials file"},
	} {
		_, err := report.ParseTarget(c.target)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseTarget(%q) = %v, want an error saying %q", c.target, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseTarget(%q) repeats the secret: %v", c.target, err)
		}
	}
}

// TestFileTarget: a file target replaces its file whole, with mode 0640,
// and leaves nothing beside it; a write that cannot finish leaves no
// temporary file.
func TestFileTarget(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "farm.json")
	tg, err := report.ParseTarget(path)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	ctx := context.Background()
	if err := tg.Check(ctx); err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{`{"first": "a longer report than the next"}`, `{"second": 2}`} {
		where, err := tg.Write(ctx, []byte(doc), time.Now())
		if err != nil || where != path {
			t.Fatalf("write: %q %v", where, err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != doc {
			t.Fatalf("the file holds %q (%v), want %q", got, err, doc)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"farm.json"}) {
		t.Errorf("the directory holds %v", names)
	}

	// the file became a directory: the rename fails, the temporary file goes
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path, "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.Write(ctx, []byte(`{}`), time.Now()); err == nil || !strings.Contains(err.Error(), "writing the report to "+path) {
		t.Fatalf("a write over a directory: %v", err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"farm.json"}) {
		t.Errorf("after a failed write the directory holds %v", names)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// s3Target starts the test S3 server behind a fault proxy and returns a
// target on it, with the server's keys in the environment.
func s3Target(t *testing.T, settings string) (report.Target, *testpeers.S3, *testpeers.FaultProxy) {
	t.Helper()
	s3 := testpeers.StartS3(t, testpeers.S3Options{})
	proxy := testpeers.NewFaultProxy(t, s3.Endpoint)
	t.Setenv("KILN_S3_ACCESS_KEY_ID", s3.Key.ID)
	t.Setenv("KILN_S3_SECRET_ACCESS_KEY", s3.Key.Secret)
	tg, err := report.ParseTarget("s3://" + s3.Bucket + "/reports/farm?endpoint=" + proxy.URL + "&region=" + s3.Region +
		"&path_style=true" + settings)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg, s3, proxy
}

// TestS3Target: a report goes to the bucket under its time and as
// latest.json; when S3 fails — an error answer, a connection cut in the
// middle of the upload — the write fails saying so, and latest.json is
// still the previous report, whole; once S3 is back, the next write goes
// through.
func TestS3Target(t *testing.T) {
	tg, s3, proxy := s3Target(t, "&max_attempts=2")
	ctx := context.Background()
	if err := tg.Check(ctx); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	first := []byte(`{"report": 1}` + "\n")
	where, err := tg.Write(ctx, first, at)
	if err != nil {
		t.Fatal(err)
	}
	if want := s3.Endpoint; !strings.HasSuffix(where, "/kiln/reports/farm/report-20261201T100000Z.json") || strings.Contains(where, want) {
		t.Errorf("written to %q", where) // named by the endpoint it was given: the proxy
	}
	if got := s3.Objects(t, "reports/"); !slices.Equal(got, []string{"reports/farm/latest.json", "reports/farm/report-20261201T100000Z.json"}) {
		t.Fatalf("objects: %v", got)
	}

	big := bytes.Repeat([]byte("x"), 300<<10)
	for _, f := range []struct {
		name  string
		fault testpeers.Fault
		doc   []byte
		want  string
	}{
		{"S3 answers 500", testpeers.Fault{Status: 500}, []byte(`{"report": 2}`), "S3 answered InternalError"},
		{"the upload is cut", testpeers.Fault{CutAfter: 100 << 10}, big, "writing reports/farm/report-"},
	} {
		proxy.Set(f.fault)
		at = at.Add(time.Hour)
		_, err := tg.Write(ctx, f.doc, at)
		if err == nil || !strings.Contains(err.Error(), f.want) {
			t.Errorf("%s: %v, want an error saying %q", f.name, err, f.want)
		}
		proxy.Set(testpeers.Fault{})
		if got := s3.Get(t, "reports/farm/latest.json"); !bytes.Equal(got, first) {
			t.Errorf("%s: latest.json holds %d bytes %.40q, want the previous report", f.name, len(got), got)
		}
		if got := s3.Objects(t, "reports/"); len(got) != 2 {
			t.Errorf("%s: objects %v", f.name, got)
		}
		if u := s3.Uploads(t, "reports/"); len(u) != 0 {
			t.Errorf("%s: unfinished uploads %v", f.name, u)
		}
	}

	at = at.Add(time.Hour)
	if _, err := tg.Write(ctx, big, at); err != nil {
		t.Fatalf("after the faults: %v", err)
	}
	if got := s3.Get(t, "reports/farm/latest.json"); !bytes.Equal(got, big) {
		t.Errorf("latest.json holds %d bytes, want the last report's %d", len(got), len(big))
	}
	if got := s3.Get(t, "reports/farm/"+report.ObjectName(at)); !bytes.Equal(got, big) {
		t.Errorf("the last report's object holds %d bytes, want %d", len(got), len(big))
	}
}
