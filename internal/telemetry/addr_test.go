package telemetry

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/testkit"
)

func TestParseListenAddress(t *testing.T) {
	cases := testkit.ListenAddressCases(t, filepath.Join("testdata", "listen_addresses.tsv"))
	if len(cases) < 40 {
		t.Fatalf("only %d cases read from testdata/listen_addresses.tsv; is the file truncated?", len(cases))
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("line%d_%s", c.Line, c.Input), func(t *testing.T) {
			got, err := ParseListenAddress(c.Input)
			if c.WantErr != "" {
				if err == nil {
					t.Fatalf("ParseListenAddress(%q) = %q, want error containing %q", c.Input, got, c.WantErr)
				}
				if !strings.Contains(err.Error(), c.WantErr) {
					t.Fatalf("ParseListenAddress(%q) error = %q, want it to contain %q", c.Input, err, c.WantErr)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%q", c.Input)) {
					t.Errorf("error %q does not quote the input %q", err, c.Input)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseListenAddress(%q): unexpected error: %v", c.Input, err)
			}
			if got != c.Want {
				t.Fatalf("ParseListenAddress(%q) = %q, want %q", c.Input, got, c.Want)
			}
			// The result must be what net.Listen expects, and stable when parsed again.
			if _, _, err := net.SplitHostPort(got); err != nil {
				t.Errorf("result %q is not host:port: %v", got, err)
			}
			again, err := ParseListenAddress(got)
			if err != nil || again != got {
				t.Errorf("ParseListenAddress(%q) = %q, %v; want the same address back", got, again, err)
			}
		})
	}
}

// TestParseListenAddressCoverage guards the shared table itself: every kind of
// input docs/architecture.md#runner-metrics names must stay covered even if someone trims the file.
func TestParseListenAddressCoverage(t *testing.T) {
	cases := testkit.ListenAddressCases(t, filepath.Join("testdata", "listen_addresses.tsv"))
	has := func(pred func(testkit.AddressCase) bool) bool {
		for _, c := range cases {
			if pred(c) {
				return true
			}
		}
		return false
	}
	kinds := map[string]func(testkit.AddressCase) bool{
		"IPv4":           func(c testkit.AddressCase) bool { return c.Want == "127.0.0.1:9252" },
		"IPv6":           func(c testkit.AddressCase) bool { return strings.HasPrefix(c.Want, "[") },
		"host name":      func(c testkit.AddressCase) bool { return c.Want == "localhost:9000" },
		"service name":   func(c testkit.AddressCase) bool { return strings.HasSuffix(c.Input, ":http") && c.Want != "" },
		"default port":   func(c testkit.AddressCase) bool { return !strings.Contains(c.Input, ":") && c.Want != "" },
		"all interfaces": func(c testkit.AddressCase) bool { return c.Input == ":9000" },
		"empty":          func(c testkit.AddressCase) bool { return c.Input == "" && c.WantErr != "" },
		"empty port":     func(c testkit.AddressCase) bool { return c.Input == ":" && c.WantErr != "" },
		"host colon":     func(c testkit.AddressCase) bool { return c.Input == "localhost:" && c.WantErr != "" },
		"bare IPv6":      func(c testkit.AddressCase) bool { return c.Input == "::1" && c.WantErr != "" },
		"IPv6 and port":  func(c testkit.AddressCase) bool { return c.Input == "fe80::1:9252" && c.WantErr != "" },
		"unknown name":   func(c testkit.AddressCase) bool { return strings.Contains(c.WantErr, "unknown port name") },
		"out of range":   func(c testkit.AddressCase) bool { return strings.Contains(c.WantErr, "out of range") },
		"scheme":         func(c testkit.AddressCase) bool { return strings.Contains(c.Input, "://") && c.WantErr != "" },
		"whitespace":     func(c testkit.AddressCase) bool { return strings.Contains(c.Input, " ") && c.WantErr != "" },
	}
	for kind, pred := range kinds {
		if !has(pred) {
			t.Errorf("testdata/listen_addresses.tsv has no %s case", kind)
		}
	}
}

// TestParseListenAddressControl covers inputs the TSV file cannot hold.
func TestParseListenAddressControl(t *testing.T) {
	for _, in := range []string{"localhost\t:9252", "localhost:9252\n", "local\x00host:9252", "[::1%\x01]:9252"} {
		if got, err := ParseListenAddress(in); err == nil {
			t.Errorf("ParseListenAddress(%q) = %q, want an error", in, got)
		}
	}
}

// TestParseListenAddressListens proves the normalised forms are accepted by
// net.Listen, which is the point of normalising them.
func TestParseListenAddressListens(t *testing.T) {
	for _, in := range []string{"127.0.0.1:0", "localhost:0"} {
		addr, err := ParseListenAddress(in)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("net.Listen(%q): %v", addr, err)
		}
		ln.Close()
	}
}

func ExampleParseListenAddress() {
	for _, in := range []string{"127.0.0.1:9100", "localhost", "[::1]:http", ":9000", "localhost:", "::1"} {
		addr, err := ParseListenAddress(in)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(addr)
	}
	// Output:
	// 127.0.0.1:9100
	// localhost:9252
	// [::1]:80
	// :9000
	// error: invalid metrics listen address "localhost:": empty port after ":"; give a port number or service name, or leave out the ":" to use port 9252
	// error: invalid metrics listen address "::1": an IPv6 address must be enclosed in brackets, e.g. "[::1]:9252"
}
