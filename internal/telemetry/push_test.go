package telemetry

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCheckPushURL(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:9091", "https://push.example.org/", "http://pg:9091/prefix"} {
		if err := CheckPushURL(ok); err != nil {
			t.Errorf("CheckPushURL(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:9091", "pushgateway:9091", "ftp://x/", "http://", "http://x/?a=b", "http://x/#f", "http://[::1"} {
		if err := CheckPushURL(bad); err == nil {
			t.Errorf("CheckPushURL(%q) accepted", bad)
		}
	}
}

// TestPushRun checks what PushRun sends: a POST (Add, never a PUT that
// would delete the last success's timestamp) to the group of the job and
// instance, with the run's own metrics and the timestamp of its outcome.
func TestPushRun(t *testing.T) {
	type push struct{ method, path, body string }
	got := make(chan push, 4)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- push{r.Method, r.URL.Path, string(b)}
		w.WriteHeader(http.StatusOK)
	}))
	defer gw.Close()

	reg := NewRegistry()
	done := prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_job_items_done", Help: "Items the last run did."})
	done.Set(3)
	reg.MustRegister(done)
	at := time.Unix(1700000000, 500_000_000)
	cfg := PushConfig{URL: gw.URL + "/", Job: "kiln_job", Instance: "host-1", Namespace: "kiln_job"}

	if err := PushRun(context.Background(), cfg, WithPrefix(reg, "kiln_"), true, at); err != nil {
		t.Fatal(err)
	}
	p := <-got
	if p.method != http.MethodPost || p.path != "/metrics/job/kiln_job/instance/host-1" {
		t.Errorf("pushed with %s %s, want POST /metrics/job/kiln_job/instance/host-1", p.method, p.path)
	}
	for _, want := range []string{"kiln_job_items_done", "kiln_job_last_success_timestamp_seconds"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("the push lacks %s", want)
		}
	}
	for _, not := range []string{"kiln_job_last_failure_timestamp_seconds", "go_goroutines", "process_cpu_seconds_total"} {
		if strings.Contains(p.body, not) {
			t.Errorf("a successful push carries %s", not)
		}
	}

	if err := PushRun(context.Background(), cfg, WithPrefix(reg, "kiln_"), false, at); err != nil {
		t.Fatal(err)
	}
	p = <-got
	if p.method != http.MethodPost || !strings.Contains(p.body, "kiln_job_last_failure_timestamp_seconds") ||
		strings.Contains(p.body, "last_success") {
		t.Errorf("failed run pushed %s %s:\n%s", p.method, p.path, p.body)
	}

	// The gateway's refusal is the caller's error.
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "inconsistent", http.StatusBadRequest)
	}))
	defer refuse.Close()
	cfg.URL = refuse.URL
	if err := PushRun(context.Background(), cfg, reg, true, at); err == nil || !strings.Contains(err.Error(), "Pushgateway") {
		t.Errorf("a refused push: %v", err)
	}
	if err := PushRun(context.Background(), PushConfig{URL: gw.URL}, reg, true, at); err == nil {
		t.Error("PushRun without job and namespace succeeded")
	}
}

func TestListenAddressValue(t *testing.T) {
	var addr string
	v := NewListenAddressValue(&addr)
	if v.String() != "" || v.Type() == "" {
		t.Errorf("fresh value: %q, type %q", v.String(), v.Type())
	}
	if err := v.Set("localhost"); err != nil || addr != "localhost:9252" || v.String() != "localhost:9252" {
		t.Errorf("Set(localhost): %v, %q", err, addr)
	}
	if err := v.Set("localhost:"); err == nil || addr != "localhost:9252" {
		t.Errorf("Set(localhost:) = %v and left %q; want an error and the old value", err, addr)
	}
	if err := v.Set(""); err == nil {
		t.Error("Set(\"\") accepted")
	}
}
