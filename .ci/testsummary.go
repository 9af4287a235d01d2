//go:build ignore

// testsummary reads `go test -json` events on stdin and prints what a
// person needs from a CI log: one line per package, the output of failed
// tests and of failed builds, and a final count of passed, failed and
// skipped tests. It exits 1 when anything failed.
//
// It is a single file run with `go run .ci/testsummary.go` so that CI needs
// nothing beyond the Go toolchain (no jq, no gotestsum).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action     string
	Package    string
	ImportPath string
	Test       string
	Output     string
	Elapsed    float64
}

func main() {
	var passed, failed, skipped int
	var okPkgs, failedPkgs []string
	output := map[string]*strings.Builder{} // package/test → its output
	key := func(e event) string { return e.Package + "\x00" + e.Test }
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for in.Scan() {
		line := in.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// not an event: a message from the go command itself
			fmt.Println(string(line))
			continue
		}
		switch e.Action {
		case "build-output":
			fmt.Print(e.Output)
		case "build-fail":
			failedPkgs = append(failedPkgs, e.ImportPath+" (build failed)")
		case "output":
			b := output[key(e)]
			if b == nil {
				b = &strings.Builder{}
				output[key(e)] = b
			}
			b.WriteString(e.Output)
		case "pass", "fail", "skip":
			out := output[key(e)]
			delete(output, key(e))
			if e.Test != "" {
				switch e.Action {
				case "pass":
					passed++
				case "fail":
					failed++
					fmt.Printf("--- FAIL: %s (%s)\n", e.Test, e.Package)
					if out != nil {
						fmt.Print(indent(out.String()))
					}
				case "skip":
					skipped++
				}
				continue
			}
			switch e.Action {
			case "pass":
				okPkgs = append(okPkgs, e.Package)
				fmt.Printf("ok      %s\t%.1fs\n", e.Package, e.Elapsed)
			case "fail":
				failedPkgs = append(failedPkgs, e.Package)
				fmt.Printf("FAIL    %s\t%.1fs\n", e.Package, e.Elapsed)
				// Package-level output: a panic, a timeout, TestMain failing.
				if out != nil {
					fmt.Print(indent(packageOutput(out.String())))
				}
			case "skip":
				fmt.Printf("?       %s\t[no test files]\n", e.Package)
			}
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
	fmt.Println()
	if len(failedPkgs) > 0 {
		sort.Strings(failedPkgs)
		fmt.Printf("Failed packages:\n  %s\n", strings.Join(failedPkgs, "\n  "))
	}
	fmt.Printf("%d passed, %d failed, %d skipped (tests and subtests); %d packages ok, %d failed\n",
		passed, failed, skipped, len(okPkgs), len(failedPkgs))
	if failed > 0 || len(failedPkgs) > 0 {
		os.Exit(1)
	}
}

// packageOutput drops from a package's own output the lines go test
// prints for every package (PASS, FAIL, ok), keeping what explains a
// failure outside any test.
func packageOutput(s string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		t := strings.TrimSpace(l)
		if t == "" || t == "PASS" || t == "FAIL" || strings.HasPrefix(t, "FAIL\t") || strings.HasPrefix(t, "ok \t") ||
			strings.HasPrefix(t, "ok  ") || strings.HasPrefix(t, "coverage:") {
			continue
		}
		b.WriteString(l)
	}
	return b.String()
}

func indent(s string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString("    " + l)
		}
	}
	return b.String()
}
