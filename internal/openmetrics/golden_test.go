package openmetrics

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-build/kiln/internal/testdb"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the current output")

// goldenFiles name the golden file of each exposition format.
var goldenFiles = []struct {
	file, accept, contentType string
}{
	{"metrics.openmetrics.golden", acceptOpenMetrics, "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"},
	{"metrics.text.golden", acceptText, "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"},
}

// TestGolden scrapes the fixed farm, built through the real store, in both
// formats and compares the bodies with the checked-in golden files. Both
// databases must produce exactly the same bytes. Run with -update to
// rewrite the files (from whichever database runs first, SQLite; the
// PostgreSQL run then compares against them).
func TestGolden(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		clk := &testClock{}
		s := openStore(t, dsn, clk)
		buildGoldenFarm(t, s, clk)
		h := NewHandler(s, Options{Now: clk.Now})
		for _, g := range goldenFiles {
			rec := scrapeHTTP(t, h, g.accept)
			if ct := rec.Header().Get("Content-Type"); ct != g.contentType {
				t.Errorf("%s: Content-Type %q, want %q", g.file, ct, g.contentType)
			}
			path := filepath.Join("testdata", g.file)
			if *update && t.Name() == "TestGolden/sqlite" {
				if err := os.WriteFile(path, rec.Body.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
			}
			if got := rec.Body.String(); got != string(want) {
				t.Errorf("%s differs from the output:\n%s", path, lineDiff(string(want), got))
			}
		}
	})
}
