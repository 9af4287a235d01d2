package telemetry

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestReadBuildInfo(t *testing.T) {
	bi := ReadBuildInfo()
	for name, v := range map[string]string{
		"Version": bi.Version, "Revision": bi.Revision, "Branch": bi.Branch, "GoVersion": bi.GoVersion,
		"OS": bi.OS, "Architecture": bi.Architecture, "BuiltAt": bi.BuiltAt,
	} {
		if v == "" {
			t.Errorf("%s is empty; want a value or %q", name, unknown)
		}
	}
	if bi.GoVersion != runtime.Version() || bi.OS != runtime.GOOS || bi.Architecture != runtime.GOARCH {
		t.Errorf("toolchain fields %+v do not describe this runtime", bi)
	}
}

func TestReadBuildInfoLinkerStampsWin(t *testing.T) {
	saved := [4]string{Version, Revision, Branch, BuiltAt}
	t.Cleanup(func() { Version, Revision, Branch, BuiltAt = saved[0], saved[1], saved[2], saved[3] })
	Version, Revision, Branch, BuiltAt = "1.2.3", "abc1234", "main", "2026-11-21T10:00:00Z"

	bi := ReadBuildInfo()
	if bi.Version != "1.2.3" || bi.Revision != "abc1234" || bi.Branch != "main" || bi.BuiltAt != "2026-11-21T10:00:00Z" {
		t.Errorf("ReadBuildInfo() = %+v, want the -X stamps", bi)
	}
}

func TestFillFromModuleInfo(t *testing.T) {
	info := &debug.BuildInfo{
		Main: debug.Module{Version: "v0.4.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef"},
			{Key: "vcs.time", Value: "2026-01-01T00:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	var bi BuildInfo
	fillFromModuleInfo(&bi, info)
	if bi.Version != "v0.4.0" || bi.Revision != "0123456789abcdef-dirty" {
		t.Errorf("got %+v", bi)
	}
	if bi.BuiltAt != "" {
		t.Errorf("BuiltAt = %q taken from the commit time; want it left for the -X stamp", bi.BuiltAt)
	}

	devel := BuildInfo{Version: "9.9.9"}
	fillFromModuleInfo(&devel, &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}})
	if devel.Version != "9.9.9" {
		t.Errorf("module info overrode the -X version: %q", devel.Version)
	}
}

func TestRegisterBuildInfo(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	bi := BuildInfo{Version: "1.2.3", Revision: "abc1234", GoVersion: "go1.26.8", OS: "linux", Architecture: "amd64"}
	if err := RegisterBuildInfo(reg, bi); err != nil {
		t.Fatal(err)
	}
	want := `# HELP kiln_build_info Build information of this kiln process (server or runner: the same binary); always 1.
# TYPE kiln_build_info gauge
kiln_build_info{architecture="amd64",branch="unknown",built_at="unknown",go_version="go1.26.8",os="linux",revision="abc1234",version="1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if err := RegisterBuildInfo(reg, bi); err == nil {
		t.Error("registering the info metric twice succeeded")
	}
}
