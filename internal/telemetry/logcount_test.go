package telemetry

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLogMetrics: warnings and errors are counted by level, also those the
// output's level hides, and the output gets exactly what it asked for,
// attributes and groups included.
func TestLogMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewLogMetrics(reg, "kiln_test_errors_total", "Warnings and errors logged, by level.")
	if err != nil {
		t.Fatal(err)
	}
	want := func(warnings, errors int) {
		t.Helper()
		exp := `# HELP kiln_test_errors_total Warnings and errors logged, by level.
# TYPE kiln_test_errors_total counter
kiln_test_errors_total{level="error"} ` + strconv.Itoa(errors) + `
kiln_test_errors_total{level="warning"} ` + strconv.Itoa(warnings) + `
`
		if err := testutil.GatherAndCompare(reg, strings.NewReader(exp)); err != nil {
			t.Error(err)
		}
	}
	want(0, 0)

	var out bytes.Buffer
	logger := m.Logger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError})))
	logger = logger.With("runner", "r1").WithGroup("g")
	logger.Info("fine")
	logger.Warn("hidden by the level, counted")
	logger.Error("shown and counted", "k", "v")
	logger.Log(context.Background(), slog.LevelError+4, "above error counts as error")
	want(1, 2)
	if got := out.String(); strings.Contains(got, "hidden") || strings.Contains(got, "fine") ||
		!strings.Contains(got, `msg="shown and counted" runner=r1 g.k=v`) {
		t.Errorf("output:\n%s", got)
	}

	m.Logger(nil).Warn("a nil logger counts and discards")
	want(2, 2)
}
