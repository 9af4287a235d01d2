package telemetry

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// listenAddressCase is one row of testdata/listen_addresses.tsv.
type listenAddressCase struct {
	line    int
	input   string
	want    string // normalised address; empty when an error is expected
	wantErr string // substring of the expected error; empty on success
}

// readListenAddressCases reads the shared table of address cases. The file
// format is described at its top; other packages' tests read the same file.
func readListenAddressCases(t *testing.T) []listenAddressCase {
	t.Helper()
	f, err := os.Open("testdata/listen_addresses.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	var cases []listenAddressCase
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		input, want, ok := strings.Cut(line, "\t")
		if !ok || strings.Contains(want, "\t") {
			t.Fatalf("listen_addresses.tsv:%d: want exactly two TAB-separated columns, got %q", n, line)
		}
		c := listenAddressCase{line: n, input: input}
		if sub, isErr := strings.CutPrefix(want, "error: "); isErr {
			c.wantErr = sub
		} else {
			c.want = want
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

func TestParseListenAddress(t *testing.T) {
	cases := readListenAddressCases(t)
	if len(cases) < 40 {
		t.Fatalf("only %d cases read from testdata/listen_addresses.tsv; is the file truncated?", len(cases))
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("line%d_%s", c.line, c.input), func(t *testing.T) {
			got, err := ParseListenAddress(c.input)
			if c.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseListenAddress(%q) = %q, want error containing %q", c.input, got, c.wantErr)
				}
				if !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("ParseListenAddress(%q) error = %q, want it to contain %q", c.input, err, c.wantErr)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%q", c.input)) {
					t.Errorf("error %q does not quote the input %q", err, c.input)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseListenAddress(%q): unexpected error: %v", c.input, err)
			}
			if got != c.want {
				t.Fatalf("ParseListenAddress(%q) = %q, want %q", c.input, got, c.want)
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
// input SPEC §4 names must stay covered even if someone trims the file.
func TestParseListenAddressCoverage(t *testing.T) {
	cases := readListenAddressCases(t)
	has := func(pred func(listenAddressCase) bool) bool {
		for _, c := range cases {
			if pred(c) {
				return true
			}
		}
		return false
	}
	kinds := map[string]func(listenAddressCase) bool{
		"IPv4":           func(c listenAddressCase) bool { return c.want == "127.0.0.1:9252" },
		"IPv6":           func(c listenAddressCase) bool { return strings.HasPrefix(c.want, "[") },
		"host name":      func(c listenAddressCase) bool { return c.want == "localhost:9000" },
		"service name":   func(c listenAddressCase) bool { return strings.HasSuffix(c.input, ":http") && c.want != "" },
		"default port":   func(c listenAddressCase) bool { return !strings.Contains(c.input, ":") && c.want != "" },
		"all interfaces": func(c listenAddressCase) bool { return c.input == ":9000" },
		"empty":          func(c listenAddressCase) bool { return c.input == "" && c.wantErr != "" },
		"empty port":     func(c listenAddressCase) bool { return c.input == ":" && c.wantErr != "" },
		"host colon":     func(c listenAddressCase) bool { return c.input == "localhost:" && c.wantErr != "" },
		"bare IPv6":      func(c listenAddressCase) bool { return c.input == "::1" && c.wantErr != "" },
		"IPv6 and port":  func(c listenAddressCase) bool { return c.input == "fe80::1:9252" && c.wantErr != "" },
		"unknown name":   func(c listenAddressCase) bool { return strings.Contains(c.wantErr, "unknown port name") },
		"out of range":   func(c listenAddressCase) bool { return strings.Contains(c.wantErr, "out of range") },
		"scheme":         func(c listenAddressCase) bool { return strings.Contains(c.input, "://") && c.wantErr != "" },
		"whitespace":     func(c listenAddressCase) bool { return strings.Contains(c.input, " ") && c.wantErr != "" },
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
