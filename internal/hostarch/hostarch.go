// Package hostarch says which architectures this host builds for, in
// Debian's names — what work requests ask for (host_architecture) and what
// dpkg reports. A runner reports them to its server; a server gives them
// to the runners it starts itself (the worker pool of --local-runners).
// It depends on nothing else of kiln, so that both can use it.
package hostarch

import (
	"context"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// debian maps Go's GOARCH to Debian's architecture names.
var debian = map[string]string{
	"amd64":    "amd64",
	"arm64":    "arm64",
	"386":      "i386",
	"arm":      "armhf",
	"ppc64le":  "ppc64el",
	"ppc64":    "ppc64",
	"s390x":    "s390x",
	"riscv64":  "riscv64",
	"mips64le": "mips64el",
	"mipsle":   "mipsel",
	"loong64":  "loong64",
}

// Debian is the Debian name of a Go architecture (GOARCH), or the Go
// name itself when Debian has no other.
func Debian(goarch string) string {
	if a, ok := debian[goarch]; ok {
		return a
	}
	return goarch
}

// Detect returns this host's native architecture and the foreign ones it
// can run: dpkg's when dpkg exists, else GOARCH in Debian's name and none.
func Detect(ctx context.Context) (native string, foreign []string) {
	native, foreign = dpkg(ctx)
	if native == "" {
		native = Debian(runtime.GOARCH)
	}
	return native, foreign
}

// dpkg asks dpkg, when it exists, for the native and foreign
// architectures.
func dpkg(ctx context.Context) (string, []string) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "dpkg", "--print-architecture").Output()
	if err != nil {
		return "", nil
	}
	native := strings.TrimSpace(string(out))
	out, err = exec.CommandContext(ctx, "dpkg", "--print-foreign-architectures").Output()
	if err != nil {
		return native, nil
	}
	return native, strings.Fields(string(out))
}
