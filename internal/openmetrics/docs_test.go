package openmetrics

import (
	"os"
	"regexp"
	"testing"
)

// TestDocs keeps docs/open-metrics.md true: it lists every family, and
// its table of architecture label names is what ArchitectureLabel does.
func TestDocs(t *testing.T) {
	body, err := os.ReadFile("../../docs/open-metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| (gauge|histogram) \\|").FindAllStringSubmatch(string(body), -1) {
		listed[m[1]] = true
		if _, ok := families[m[1]]; !ok {
			t.Errorf("docs/open-metrics.md lists %s, which is not a family", m[1])
		}
	}
	for _, name := range familyNames() {
		if !listed[name] {
			t.Errorf("docs/open-metrics.md does not list family %s", name)
		}
	}
	rows := regexp.MustCompile("(?m)^\\| `([a-z0-9-]+)` \\| `(architecture_[a-z0-9_]+)` \\|$").FindAllStringSubmatch(string(body), -1)
	if len(rows) < 3 {
		t.Fatalf("the architecture table has %d rows", len(rows))
	}
	for _, m := range rows {
		if got := ArchitectureLabel(m[1]); got != m[2] {
			t.Errorf("docs say %s → %s, ArchitectureLabel gives %s", m[1], m[2], got)
		}
	}
}
