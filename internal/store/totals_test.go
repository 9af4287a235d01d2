package store

import (
	"encoding/json"
	"testing"
)

// FuzzCanonicalLabels: the stored form of a label set is exactly what
// encoding/json writes, whatever the names and values, so that keys
// written by any version of kiln meet in the same total.
func FuzzCanonicalLabels(f *testing.F) {
	for _, seed := range [][4]string{
		{"category", "debian:binary-package", "scope_id", "12"},
		{"le", "+Inf", "task_name", "sbuild"},
		{"issuer", "https://sso.example/<realm>&x", "active", "1"},
		{"a\"b", "c\\d", "\x00", "\u2028é\xff"},
		{"", "", "z", "~"},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3])
	}
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		l := Labels{k1: v1, k2: v2, "scope_id": "1"}
		want, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if got := canonicalLabels(l); got != string(want) {
			t.Fatalf("canonicalLabels(%q) = %s, encoding/json: %s", l, got, want)
		}
		// the same set built by adding k2 to the rest
		rest := Labels{k1: v1, "scope_id": "1"}
		if k2 == k1 || k2 == "scope_id" {
			rest = Labels{k1: v1, "scope_id": "1"}
			rest[k2] = "replaced"
		}
		if got := canonicalWith(rest, k2, v2); got != string(want) {
			t.Fatalf("canonicalWith(%q, %q, %q) = %s, encoding/json: %s", rest, k2, v2, got, want)
		}
	})
}

func TestCanonicalLabelsEmpty(t *testing.T) {
	for _, l := range []Labels{nil, {}} {
		want, _ := json.Marshal(l)
		if got := canonicalLabels(l); got != string(want) {
			t.Errorf("%#v: %s, want %s", l, got, want)
		}
	}
}
