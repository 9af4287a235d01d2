package telemetry

import (
	"net"
	"testing"
)

// FuzzParseListenAddress: the parser of --metrics-server never panics, and
// what it returns is a host:port with a port that it parses back to
// itself. Seeds: testdata/fuzz/FuzzParseListenAddress (from the shared
// address table).
func FuzzParseListenAddress(f *testing.F) {
	for _, s := range []string{":9252", "localhost", "[::1]:http", "127.0.0.1:", "host:99999", "[fe80::1%eth0]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := ParseListenAddress(s)
		if err != nil {
			return
		}
		host, port, err := net.SplitHostPort(out)
		if err != nil || port == "" {
			t.Fatalf("%q gave %q, which is no host:port (%v)", s, out, err)
		}
		_ = host
		again, err := ParseListenAddress(out)
		if err != nil || again != out {
			t.Fatalf("%q gave %q, which parses to %q, %v", s, out, again, err)
		}
	})
}
