package openmetrics

import (
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("workers", workers) }

// ArchitectureLabel is the label name under which the workers family
// reports whether a worker supports architecture arch: "architecture_"
// followed by arch lower-cased, with every character other than a–z, 0–9
// and _ replaced by _. So "amd64" gives architecture_amd64 and "hurd-i386"
// gives architecture_hurd_i386. The mapping is needed because Debian
// architecture names may contain "-", which label names may not. Users
// find it in docs/open-metrics.md, whose table a test keeps true; the
// external_workers_by_architecture family needs no mapping.
//
// Two architectures can map to the same label ("arm-64" and "ARM_64"); they
// then share it: its value is 1 when the worker supports either, and
// series that only differed there are summed into one. No Debian
// architecture name collides with another.
func ArchitectureLabel(arch string) string {
	var b strings.Builder
	b.WriteString("architecture_")
	for _, r := range strings.ToLower(arch) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// splitArchitectures reads the store's sorted, comma-joined architecture
// list; empty names are ignored.
func splitArchitectures(joined string) []string {
	var out []string
	for _, a := range strings.Split(joined, ",") {
		if a != "" {
			out = append(out, a)
		}
	}
	return out
}

// workerArchitectures maps each architecture label name to the
// architectures (sorted) that map to it, over every running total of an
// external worker, including those whose value dropped to 0: a label set
// once reported keeps its labels, so the set of architecture labels is
// stable as workers come and go.
func workerArchitectures(totals []store.Total) map[string][]string {
	byLabel := map[string][]string{}
	for _, t := range totals {
		if t.Family != "workers" || t.Labels["worker_type"] != string(model.WorkerExternal) {
			continue
		}
		for _, a := range splitArchitectures(t.Labels["architectures"]) {
			l := ArchitectureLabel(a)
			if !contains(byLabel[l], a) {
				byLabel[l] = append(byLabel[l], a)
				sort.Strings(byLabel[l])
			}
		}
	}
	return byLabel
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// workers counts workers by connection state, busy state and type. busy
// is 1 while a worker holds at least one running work request: a runner
// of --concurrent 3 is busy with one request as with three (how full it is
// is in its own kiln_runner_jobs ÷ kiln_runner_limit). Pool
// workers also carry their pool. External workers carry their host
// architecture and, for every architecture known to any external worker,
// architecture_<a> = 1 when they support it, else 0. Series exist only for
// the combinations the running totals hold (workers that exist or existed),
// never for every combination of architectures, which the reference
// implementation multiplied out into 2^architectures series.
func workers(b *build) (*dto.MetricFamily, error) {
	archLabels := workerArchitectures(b.rows("workers"))
	names := []string{"connected", "busy", "worker_type", labelPool, "host_architecture"}
	for name := range archLabels {
		names = append(names, name)
	}
	g := b.gauges("workers", names...)
	for _, t := range b.rows("workers") {
		ok, err := g.fill(t)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		g.l.drop("host_architecture")
		if g.l.get("worker_type") == string(model.WorkerExternal) {
			g.l.set("host_architecture", t.Labels["host_architecture"])
			for name := range archLabels {
				g.l.set(name, "0")
			}
			for _, a := range splitArchitectures(t.Labels["architectures"]) {
				g.l.set(ArchitectureLabel(a), "1")
			}
		}
		g.add(float64(t.Value))
	}
	return g.family("Number of workers, by connected (1/0), busy (1/0), worker_type; pool workers by worker_pool; " +
		"external workers by host_architecture and architecture_<arch> (1 if supported, else 0) for every architecture known to external workers.")
}
