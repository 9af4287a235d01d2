package telemetry_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/telemetry"
)

// A maintenance command pushes what its run did when it ends, successful or
// not; only a success records the success timestamp.
func ExamplePushRun() {
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println(r.Method, r.URL.Path)
	}))
	defer gateway.Close()

	reg := prometheus.NewRegistry()
	deleted := prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_expire_artifacts_deleted", Help: "Artifacts the last run deleted."})
	reg.MustRegister(deleted)
	deleted.Set(12)

	err := telemetry.PushRun(context.Background(), telemetry.PushConfig{
		URL: gateway.URL, Job: "kiln_expire", Instance: "build-host", Namespace: "kiln_expire",
	}, reg, true, time.Now())
	fmt.Println(err)
	// Output:
	// POST /metrics/job/kiln_expire/instance/build-host
	// <nil>
}

// --metrics-server is checked when the flag is parsed, so a bad address
// stops the program before it starts anything.
func ExampleListenAddressValue() {
	var addr string
	fs := flag.NewFlagSet("runner", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(telemetry.NewListenAddressValue(&addr), "metrics-server", "address of /metrics")
	fmt.Println(fs.Parse([]string{"-metrics-server", "localhost"}), addr)
	fmt.Println(fs.Parse([]string{"-metrics-server", "localhost:"}) != nil, addr)
	// Output:
	// <nil> localhost:9252
	// true localhost:9252
}
