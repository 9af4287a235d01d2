package openmetrics

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseBack parses both golden outputs (which TestGolden keeps equal
// to what the store produces on both databases) with real parsers and
// checks that they say the same thing, that every family of docs/architecture.md#public-endpoint is
// there with the right type and a help text, and the figures the fixed
// farm was built to show.
func TestParseBack(t *testing.T) {
	text := parseText(t, readGolden(t, "metrics.text.golden"))
	om := parseOpenMetrics(t, readGolden(t, "metrics.openmetrics.golden"))

	if len(text.samples) == 0 {
		t.Fatal("no samples")
	}
	for k, v := range text.samples {
		if w, ok := om.samples[k]; !ok || w != v {
			t.Errorf("text has %s %v, OpenMetrics %v (present: %v)", k, v, w, ok)
		}
	}
	for k := range om.samples {
		if _, ok := text.samples[k]; !ok {
			t.Errorf("OpenMetrics has %s, text does not", k)
		}
	}

	wantTypes := map[string]string{
		"artifacts": "gauge", "assets": "gauge", "collections": "gauge", "file_store_size": "gauge",
		"file_store_max_size": "gauge", "groups": "gauge", "tokens": "gauge", "users": "gauge",
		"user_identities": "gauge", "work_requests": "gauge", "workers": "gauge", "external_workers_by_architecture": "gauge", "worker_pool_runtime": "gauge",
		"workflow_templates": "gauge", "workspaces": "gauge", "artifact_file_size": "gauge",
		"user_activity": "histogram", "user_identities_activity": "histogram", "task_execution_times": "histogram",
		"artifact_file_counts": "histogram", "artifact_file_sizes": "histogram", "collection_sizes": "histogram",
		"tokens_last_seen": "histogram",
	}
	for _, ex := range []exposition{text, om} {
		for name, typ := range wantTypes {
			if ex.types[name] != typ {
				t.Errorf("family %s: type %q, want %q", name, ex.types[name], typ)
			}
			if ex.helps[name] == "" {
				t.Errorf("family %s has no help", name)
			}
		}
		if len(ex.types) != len(wantTypes) {
			t.Errorf("%d families, want %d: %v", len(ex.types), len(wantTypes), ex.types)
		}
	}
	if len(families) != len(wantTypes) {
		t.Errorf("%d families registered, want %d", len(families), len(wantTypes))
	}

	// A few figures of the farm, as a scraper reads them.
	for k, want := range map[string]float64{
		`workspaces{expires="0",private="1",scope="debian"}`: 1,
		`workspaces{expires="1",private="1",scope="kali"}`:   1,
		`users{active="1"}`: 5,
		`users{active="0"}`: 1,
		`file_store_max_size{backend="S3",name="archive"}`:                                          1 << 30,
		`user_activity_count{scope="debian"}`:                                                       3,
		`user_activity_sum{scope="debian"}`:                                                         415,
		`user_activity_bucket{le="7",scope="debian"}`:                                               1,
		`user_activity_bucket{le="+Inf",scope="debian"}`:                                            3,
		`user_identities_activity_count{issuer="salsa.debian.org",scope="kali"}`:                    1,
		`task_execution_times_sum{scope="debian",task_name="sbuild",task_type="Worker"}`:            7242.5,
		`task_execution_times_bucket{le="60",scope="debian",task_name="sbuild",task_type="Worker"}`: 1,
		`tokens_last_seen_count{}`:                                                                  4,
		`worker_pool_runtime{worker_pool="cloud-amd64"}`:                                            5400,
		`artifacts{category="debian:upload",scope="debian"}`:                                        0,
	} {
		for fmtName, ex := range map[string]exposition{"text": text, "OpenMetrics": om} {
			if got, ok := ex.samples[k]; !ok || got != want {
				t.Errorf("%s: %s = %v (present: %v), want %v", fmtName, k, got, ok, want)
			}
		}
	}
	if _, ok := text.samples[`file_store_max_size{backend="Local",name="default"}`]; ok {
		t.Error("file_store_max_size reported for a store without a maximum")
	}
	for k := range text.samples {
		if strings.Contains(k, `issuer=""`) {
			t.Errorf("empty issuer: %s", k)
		}
	}
}

// TestPromtool lints the text output with `promtool check metrics`, as CI
// does. It expects no finding at all: the spec-mandated names are gauges
// and histograms (no _total rule applies), every family has help text, and
// units are stated in help rather than with non-base unit suffixes.
func TestPromtool(t *testing.T) {
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is required in CI (Debian package prometheus)")
		}
		t.Skip("promtool not installed (apt-get install prometheus); CI runs this check")
	}
	for _, file := range []string{"metrics.text.golden"} {
		cmd := exec.Command(path, "check", "metrics")
		cmd.Stdin = bytes.NewReader(readGolden(t, file))
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("promtool check metrics on %s: %v\n%s", file, err, out)
		}
	}
}
