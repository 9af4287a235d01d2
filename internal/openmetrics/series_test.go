package openmetrics

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/kiln-build/kiln/internal/store"
)

// encodeAll writes families in the text format.
func encodeAll(t *testing.T, fams []*dto.MetricFamily) string {
	t.Helper()
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.FmtText)
	for _, mf := range fams {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// randomSnapshot is a snapshot whose label sets and values are drawn from
// small pools, so that successive ones share most series, change some and
// drop or add others.
func randomSnapshot(rng *rand.Rand) *store.Snapshot {
	pick := func(list ...string) string { return list[rng.IntN(len(list))] }
	var totals []store.Total
	for range 200 {
		totals = append(totals, tot("work_requests", rng.Int64N(3),
			"task_type", pick("Worker", "Workflow", "Server"), "task_name", pick("sbuild", "lintian"),
			"scope_id", pick("1", "2", "3"), "status", pick("pending", "running", "completed"),
			"host_architecture", pick("amd64", "hurd-i386", "i\xff386"), "backend", pick("unshare", "auto")))
		totals = append(totals, tot("artifacts", rng.Int64N(3), "category", pick("debian:upload", "debian:source-package"),
			"scope_id", pick("1", "2")))
		le := pick("1", "2", "5", "+Inf")
		totals = append(totals, tot("artifact_file_counts", rng.Int64N(3), "category", "debian:upload", "scope_id", pick("1", "2"), "le", le))
		totals = append(totals, tot("workers", rng.Int64N(2), "connected", pick("0", "1"), "busy", "0",
			"worker_type", "external", "host_architecture", "amd64", "architectures", pick("amd64", "amd64,i386", "arm64")))
	}
	for i := range totals {
		if totals[i].Labels["scope_id"] == "3" {
			totals[i].Value = 0 // rows of a scope that comes and goes (below)
		}
	}
	rng.Shuffle(len(totals), func(i, j int) { totals[i], totals[j] = totals[j], totals[i] })
	if rng.IntN(4) > 0 {
		// numbered as the store numbers them, most of the time
		for i := range totals {
			totals[i].Set = setNumber(totals[i])
		}
	}
	s := snapshot(totals...)
	if rng.IntN(2) == 0 {
		s.ScopeNames[3] = "tails" // scope 3 comes and goes: its zero rows with it
	}
	for i := range rng.IntN(4) {
		s.Activity = append(s.Activity, store.Activity{ScopeID: 1, LastWorkflowAt: farmNow.Add(-time.Duration(i) * day), Issuers: []string{"gitlab.com"}})
	}
	return s
}

// setNumbers numbers label sets as store.Total.Set does: one number per
// family and label set, for the whole test binary.
var (
	setNumbersMu sync.Mutex
	setNumbers   = map[string]uint32{}
)

func setNumber(t store.Total) uint32 {
	setNumbersMu.Lock()
	defer setNumbersMu.Unlock()
	k := t.Family + fmt.Sprint(t.Labels) // fmt sorts map keys
	n, ok := setNumbers[k]
	if !ok {
		n = uint32(len(setNumbers) + 1)
		setNumbers[k] = n
	}
	return n
}

// TestSeriesCacheAcrossRefreshes: a series cache kept between refreshes
// gives exactly the output of a fresh one, reuses the metrics of series
// that did not change, and never changes what an earlier refresh returned.
func TestSeriesCacheAcrossRefreshes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cache := newSeriesCache()
	var prev []*dto.MetricFamily
	var prevText string
	reused := 0
	for step := range 50 {
		snap := randomSnapshot(rng)
		if step%10 == 9 {
			snap = snapshot() // everything goes, then comes back
		}
		warm, warmErr := gatherCached(snap, cache)
		cold, coldErr := Gather(snap)
		if fmt.Sprint(warmErr) != fmt.Sprint(coldErr) {
			t.Fatalf("step %d: errors differ: %v vs %v", step, warmErr, coldErr)
		}
		if got, want := encodeAll(t, warm), encodeAll(t, cold); got != want {
			t.Fatalf("step %d: the cached build differs from a fresh one:\n%s", step, lineDiff(want, got))
		}
		if prev != nil && encodeAll(t, prev) != prevText {
			t.Fatalf("step %d: the previous refresh's families changed under it", step)
		}
		old := map[string]*dto.Metric{}
		for _, mf := range prev {
			for _, m := range mf.Metric {
				old[mf.GetName()+labelText(m)] = m
			}
		}
		for _, mf := range warm {
			for _, m := range mf.Metric {
				if o := old[mf.GetName()+labelText(m)]; o == m {
					reused++
				}
			}
		}
		prev, prevText = warm, encodeAll(t, warm)
	}
	if reused == 0 {
		t.Error("no metric was reused between refreshes")
	}
	n := 0
	for _, fam := range cache.families {
		n += len(fam.byKey)
	}
	if n > 2000 {
		t.Errorf("the cache holds %d series: vanished series are not forgotten", n)
	}
}

func labelText(m *dto.Metric) string {
	var b bytes.Buffer
	for _, lp := range m.Label {
		b.WriteString(lp.GetName() + "=" + strconv.Quote(lp.GetValue()) + ",")
	}
	return b.String()
}

// TestSeriesOrder: series are sorted pair by pair, name then value, a
// prefix first, whatever labels they lack.
func TestSeriesOrder(t *testing.T) {
	snap := snapshot(
		tot("work_requests", 1, "task_type", "Workflow", "task_name", "b", "scope_id", "1", "status", "running"),
		tot("work_requests", 1, "task_type", "Worker", "task_name", "b", "scope_id", "1", "status", "running", "host_architecture", "amd64", "backend", "auto"),
		tot("work_requests", 1, "task_type", "Worker", "task_name", "a", "scope_id", "1", "status", "running", "host_architecture", "amd64", "backend", "auto"),
		tot("work_requests", 1, "task_type", "Worker", "task_name", "a", "scope_id", "1", "status", "running", "host_architecture", "amd64", "backend", "a"),
		tot("work_requests", 1, "task_type", "Workflow", "task_name", "a", "scope_id", "1", "status", "running"),
	)
	got, err := samples(t, "work_requests", snap)
	if err != nil {
		t.Fatal(err)
	}
	want := `work_requests{backend="a",host_architecture="amd64",scope="debian",status="running",task_name="a",task_type="Worker"} 1
work_requests{backend="auto",host_architecture="amd64",scope="debian",status="running",task_name="a",task_type="Worker"} 1
work_requests{backend="auto",host_architecture="amd64",scope="debian",status="running",task_name="b",task_type="Worker"} 1
work_requests{scope="debian",status="running",task_name="a",task_type="Workflow"} 1
work_requests{scope="debian",status="running",task_name="b",task_type="Workflow"} 1`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// BenchmarkGather builds the families of a farm of about 12k series, as
// the scrape benchmark seeds, from a warm series cache (as the endpoint
// does) and from a fresh one.
func BenchmarkGather(b *testing.B) {
	var totals []store.Total
	for scope := range 50 {
		for _, name := range []string{"sbuild", "lintian", "autopkgtest", "piuparts"} {
			for _, status := range []string{"pending", "running", "completed", "aborted", "blocked"} {
				for _, arch := range []string{"amd64", "arm64", "i386", "armhf", "ppc64el", "s390x", "riscv64", "hurd-i386"} {
					totals = append(totals, tot("work_requests", int64(scope), "task_type", "Worker", "task_name", name,
						"scope_id", strconv.Itoa(scope%2+1), "status", status+strconv.Itoa(scope), "host_architecture", arch, "backend", "unshare"))
				}
			}
		}
	}
	snap := snapshot(totals...)
	b.Run("warm", func(b *testing.B) {
		cache := newSeriesCache()
		if _, err := gatherCached(snap, cache); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := gatherCached(snap, cache); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Gather(snap); err != nil {
				b.Fatal(err)
			}
		}
	})
}
