package cli_test

import (
	"bytes"
	"os/exec"
	"regexp"
	"testing"

	"github.com/kiln-build/kiln/internal/testdb"
)

// TestBenchWakeupRuns keeps `kiln dev bench-wakeup` runnable: a few samples
// with two real server replicas on PostgreSQL and a runner on the second.
func TestBenchWakeupRuns(t *testing.T) {
	var out, errs bytes.Buffer
	cmd := exec.Command(kilnBin, "dev", "bench-wakeup", "--postgres", testdb.Postgres(t), "--samples", "5", "--max-pause", "10ms")
	cmd.Env = cleanEnv(t)
	cmd.Dir = t.TempDir()
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench-wakeup: %v\n%s\n%s", err, out.String(), errs.String())
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`\| kiln \| submission committed on A \| 5 \| [0-9.]+ ms \| [0-9.]+ ms \| [0-9.]+ ms \| [0-9.]+ ms \|`),
		regexp.MustCompile(`\| kiln \| client sends to A \| 5 \|`),
	} {
		if !want.Match(out.Bytes()) {
			t.Errorf("the table lacks %s:\n%s", want, out.String())
		}
	}
}
