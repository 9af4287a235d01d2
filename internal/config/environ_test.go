package config

import (
	"slices"
	"testing"
)

func TestWithoutKilnSettings(t *testing.T) {
	in := []string{"PATH=/bin", "KILN_TOKEN=secret", "HOME=/root", "KILN_DATABASE=postgres://x", "XKILN_=kept"}
	got := WithoutKilnSettings(in)
	if want := []string{"PATH=/bin", "HOME=/root", "XKILN_=kept"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if len(in) != 5 || in[1] != "KILN_TOKEN=secret" {
		t.Fatalf("the input changed: %q", in)
	}
}
