// Package testkit holds the small helpers that kiln's end-to-end tests
// share: building the real kiln binary once per test package, and a buffer
// that several goroutines (a child process's output, a logger) may write
// while the test reads it.
package testkit

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Buffer is a bytes buffer safe for concurrent writes and reads.
type Buffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// BuildKiln builds cmd/kiln into dir and returns the binary's path. ldflags
// are passed to the linker (e.g. -X to stamp version information). VCS
// stamping is off: a clone owned by another user makes git refuse to
// answer, and the build would fail.
func BuildKiln(dir string, ldflags ...string) (string, error) {
	bin := filepath.Join(dir, "kiln")
	// go test puts the toolchain's own bin directory first on PATH
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is needed to build kiln: %w", err)
	}
	args := []string{"build", "-buildvcs=false"}
	if len(ldflags) > 0 {
		args = append(args, "-ldflags", strings.Join(ldflags, " "))
	}
	build := exec.Command(goTool, append(args, "-o", bin, "github.com/kiln-build/kiln/cmd/kiln")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building kiln: %w", err)
	}
	return bin, nil
}

// MainWithKiln builds the kiln binary into a temporary directory, stores
// its path in *bin, runs the package's tests and removes the binary. Call
// it from TestMain: os.Exit(testkit.MainWithKiln(m, &kilnBin)).
func MainWithKiln(m *testing.M, bin *string) int {
	dir, err := os.MkdirTemp("", "kiln-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = BuildKiln(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// AddressCase is one row of internal/telemetry/testdata/listen_addresses.tsv,
// the table of --metrics-server addresses that the parser, the runner's
// flag and config.toml, and the server's flag and config all answer alike.
type AddressCase struct {
	Line    int
	Input   string
	Want    string // the normalised address; "" when an error is expected
	WantErr string // a substring of the expected error; "" on success
}

// ListenAddressCases reads the address table at path: one "input<TAB>want"
// row per line, want being an address or "error: <substring>"; blank lines
// and lines starting with # are skipped.
func ListenAddressCases(t testing.TB, path string) []AddressCase {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []AddressCase
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		input, want, ok := strings.Cut(line, "\t")
		if !ok || strings.Contains(want, "\t") {
			t.Fatalf("%s:%d: want exactly two TAB-separated columns, got %q", filepath.Base(path), n, line)
		}
		c := AddressCase{Line: n, Input: input}
		if sub, isErr := strings.CutPrefix(want, "error: "); isErr {
			c.WantErr = sub
		} else {
			c.Want = want
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases in %s", len(cases), path)
	}
	return cases
}
