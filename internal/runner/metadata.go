package runner

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/hostarch"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// DebianArchitecture is the Debian name of a Go architecture (GOARCH), or
// the Go name itself when Debian has no other (package hostarch).
func DebianArchitecture(goarch string) string { return hostarch.Debian(goarch) }

// Metadata describes this runner to the server (docs/architecture.md#how-work-runs): what it can
// build for, with which backends, on how much machine.
//
// Architectures come from the configuration when set (architectures,
// host_architecture), else from dpkg (its native architecture and the
// foreign ones enabled on the machine), else from GOARCH mapped to Debian's
// names. The host architecture is always among the architectures.
func Metadata(ctx context.Context, archs []string, host string) model.WorkerMetadata {
	native, foreign := hostarch.Detect(ctx)
	if host == "" {
		if len(archs) > 0 {
			host = archs[0]
		} else {
			host = native
		}
	}
	if len(archs) == 0 {
		archs = append([]string{native}, foreign...)
	}
	all := []string{host}
	for _, a := range archs {
		if a != "" && !contains(all, a) {
			all = append(all, a)
		}
	}
	return model.WorkerMetadata{
		Architectures:    all,
		HostArchitecture: host,
		Backends:         tasks.DetectBackends(ctx),
		CPUCount:         runtime.NumCPU(),
		TotalMemory:      totalMemory(),
		Version:          telemetry.ReadBuildInfo().Version,
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// totalMemory reads MemTotal from /proc/meminfo, in bytes; 0 when unknown.
func totalMemory() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	return parseMemTotal(b)
}

// parseMemTotal finds "MemTotal: <n> kB" in the content of /proc/meminfo.
func parseMemTotal(b []byte) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0
			}
			if len(f) >= 3 && strings.EqualFold(f[2], "kB") {
				n *= 1024
			}
			return n
		}
	}
	return 0
}
