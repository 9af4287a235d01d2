package runner

import (
	"context"
	"testing"
)

func TestParseMemTotal(t *testing.T) {
	in := "MemFree:   1000 kB\nMemTotal:       16318460 kB\nBuffers: 1 kB\n"
	if got := parseMemTotal([]byte(in)); got != 16318460*1024 {
		t.Fatalf("got %d", got)
	}
	if got := parseMemTotal([]byte("nothing")); got != 0 {
		t.Fatalf("got %d", got)
	}
}

func TestMetadataOverrides(t *testing.T) {
	ctx := context.Background()
	m := Metadata(ctx, []string{"arm64", "armhf"}, "")
	if m.HostArchitecture != "arm64" || len(m.Architectures) != 2 || m.Architectures[1] != "armhf" {
		t.Fatalf("override: %+v", m)
	}
	m = Metadata(ctx, []string{"amd64"}, "i386")
	if m.HostArchitecture != "i386" || !contains(m.Architectures, "amd64") || !contains(m.Architectures, "i386") {
		t.Fatalf("host outside architectures: %+v", m)
	}
	m = Metadata(ctx, nil, "")
	if m.HostArchitecture == "" || !contains(m.Architectures, m.HostArchitecture) || m.CPUCount < 1 ||
		!contains(m.Backends, "host") || m.TotalMemory <= 0 {
		t.Fatalf("detected: %+v", m)
	}
}
