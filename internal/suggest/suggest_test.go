package suggest

import (
	"fmt"
	"testing"
)

func TestClosest(t *testing.T) {
	known := []string{"data_dir", "database", "listen", "steps"}
	for _, tc := range []struct {
		key   string
		edits int
		want  string
	}{
		{"data-dir", 1, "data_dir"},
		{"DATA_DIR", 1, "data_dir"},
		{"stpes", 1, "steps"},
		{"lisen", 1, "listen"},
		{"databse", 2, "database"},
		{"metrics", 2, ""},
	} {
		got, ok := Closest(tc.key, known, tc.edits)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("Closest(%q) = %q, %v; want %q", tc.key, got, ok, tc.want)
		}
	}
}

func ExampleClosest() {
	name, ok := Closest("lisen", []string{"listen", "database"}, 2)
	fmt.Println(name, ok)
	// Output: listen true
}
