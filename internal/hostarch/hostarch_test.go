package hostarch

import (
	"context"
	"slices"
	"testing"
)

func TestDebian(t *testing.T) {
	for goarch, want := range map[string]string{"amd64": "amd64", "386": "i386", "arm": "armhf", "ppc64le": "ppc64el",
		"s390x": "s390x", "riscv64": "riscv64", "arm64": "arm64", "wasm": "wasm"} {
		if got := Debian(goarch); got != want {
			t.Errorf("%s: got %s, want %s", goarch, got, want)
		}
	}
}

func TestDetect(t *testing.T) {
	native, foreign := Detect(context.Background())
	if native == "" || slices.Contains(foreign, native) {
		t.Fatalf("native %q, foreign %v", native, foreign)
	}
}
