package telemetry

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Build stamps, set at link time so that a running binary can say exactly
// what it is (in kiln_build_info, logs and --version):
//
//	go build -ldflags "-X github.com/kiln-build/kiln/internal/telemetry.Version=1.2.3 \
//	  -X github.com/kiln-build/kiln/internal/telemetry.Revision=$(git rev-parse --short HEAD) \
//	  -X github.com/kiln-build/kiln/internal/telemetry.Branch=$(git branch --show-current) \
//	  -X github.com/kiln-build/kiln/internal/telemetry.BuiltAt=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
//
// They are the package's only variables, and only because -X can set nothing
// else. Read them through ReadBuildInfo, which fills the gaps left by a plain
// "go build" or "go install" from the module's own build information.
var (
	// Version is the release version, e.g. "1.2.3".
	Version string
	// Revision is the VCS commit the binary was built from.
	Revision string
	// Branch is the VCS branch the binary was built from.
	Branch string
	// BuiltAt is the build time, preferably RFC 3339 in UTC.
	BuiltAt string
)

// unknown is the label value for facts the build did not record. An empty
// label value would make Prometheus drop the label altogether, and dashboards
// would then disagree about which labels the info metric has.
const unknown = "unknown"

// BuildInfo describes the running binary. Its fields are the labels of
// kiln_build_info (see RegisterBuildInfo), so that one query tells which version,
// commit and toolchain every server and runner of a farm runs.
type BuildInfo struct {
	Version      string
	Revision     string
	Branch       string
	GoVersion    string
	OS           string
	Architecture string
	BuiltAt      string
}

// ReadBuildInfo returns the build stamps set with -ldflags -X, falling back
// to runtime/debug.ReadBuildInfo for binaries built without them (the module
// version for "go install …@v1.2.3", the VCS revision for builds from a
// checkout), and to "unknown" for anything still missing. It exists so that
// every binary, however it was built, exports the same complete set of labels.
func ReadBuildInfo() BuildInfo {
	bi := BuildInfo{
		Version:      Version,
		Revision:     Revision,
		Branch:       Branch,
		GoVersion:    runtime.Version(),
		OS:           runtime.GOOS,
		Architecture: runtime.GOARCH,
		BuiltAt:      BuiltAt,
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		fillFromModuleInfo(&bi, info)
	}
	for _, f := range []*string{&bi.Version, &bi.Revision, &bi.Branch, &bi.BuiltAt} {
		if *f == "" {
			*f = unknown
		}
	}
	return bi
}

// fillFromModuleInfo fills the fields the linker flags left empty. The build
// time is deliberately not taken from vcs.time: that is the commit time, and
// labelling it built_at would mislead.
func fillFromModuleInfo(bi *BuildInfo, info *debug.BuildInfo) {
	if bi.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		bi.Version = info.Main.Version
	}
	if bi.Revision == "" {
		var rev string
		modified := false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if rev != "" && modified {
			rev += "-dirty"
		}
		bi.Revision = rev
	}
}

// BuildInfoName is the name of the build-information metric of every
// kiln process: the server's internal listener and the runner's listener
// both export it, with the same labels, because they are one binary. Which
// process a series comes from is the scrape's job, never the metric's
// name, so one query (count by (version) (kiln_build_info)) covers a whole
// farm. The name follows the <namespace>_build_info convention of
// Prometheus' own programs (prometheus_build_info, pushgateway_build_info).
const BuildInfoName = "kiln_build_info"

// RegisterBuildInfo registers BuildInfoName: a constant gauge of value 1
// labelled with version, revision, branch, go_version, os, architecture and
// built_at.
//
// An info metric is how Prometheus answers "what runs where": joined on
// instance, it lets alerts and dashboards show versions next to any other
// series, and a rollout shows as one label set replacing another. Empty
// fields are exported as "unknown". It returns the registerer's error, e.g.
// when the metric is already registered.
func RegisterBuildInfo(reg prometheus.Registerer, bi BuildInfo) error {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: BuildInfoName,
		Help: "Build information of this kiln process (server or runner: the same binary); always 1.",
		ConstLabels: prometheus.Labels{
			"version":      orUnknown(bi.Version),
			"revision":     orUnknown(bi.Revision),
			"branch":       orUnknown(bi.Branch),
			"go_version":   orUnknown(bi.GoVersion),
			"os":           orUnknown(bi.OS),
			"architecture": orUnknown(bi.Architecture),
			"built_at":     orUnknown(bi.BuiltAt),
		},
	})
	g.Set(1)
	return reg.Register(g)
}

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}
