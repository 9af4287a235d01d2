package runner_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/testpeers"
)

// overlapScript is the script of the concurrent tests' tasks. It logs each
// attempt to $MARKS/<id>.log. A first attempt marks itself started in
// $ROUND, waits (20 s at most, else it fails) until $WANT tasks of the
// round have started — which only tasks running at the same time can do
// — marks the overlap, then holds until the test creates $MARKS/<id>.go.
// A later attempt (after a requeue) finishes at once.
const overlapScript = `log=$MARKS/$KILN_WORK_REQUEST.log
echo "start" >> $log
if [ -e $MARKS/$KILN_WORK_REQUEST.started ]; then echo "end" >> $log; exit 0; fi
touch $MARKS/$KILN_WORK_REQUEST.started $ROUND/$KILN_WORK_REQUEST
n=0
while [ $(ls $ROUND | wc -l) -lt $WANT ]; do
  sleep 0.05; n=$((n+1))
  if [ $n -gt 400 ]; then echo "only $(ls $ROUND | wc -l) of $WANT tasks ran at once"; exit 1; fi
done
touch $MARKS/$KILN_WORK_REQUEST.overlap
while [ ! -e $MARKS/$KILN_WORK_REQUEST.go ]; do sleep 0.05; done
echo "end" >> $log`

// metricsAddress waits for a runner started with --metrics-server
// 127.0.0.1:0 to say where it listens.
func metricsAddress(t *testing.T, p *proc) string {
	t.Helper()
	re := regexp.MustCompile(`metrics server listening.*address=(\S+)`)
	var addr string
	waitFor(t, 30*time.Second, p.name+"'s metrics listener", func() bool {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	return "http://" + addr
}

// jobsHeld sums kiln_runner_jobs on a runner's listener, and reads
// kiln_runner_limit.
func jobsHeld(t *testing.T, base string) (jobs, limit float64) {
	t.Helper()
	text := testpeers.ScrapeText(t, base+"/metrics")
	for _, l := range strings.Split(string(text), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(f[0], "kiln_runner_jobs{"):
			jobs += v
		case f[0] == "kiln_runner_limit":
			limit = v
		}
	}
	return jobs, limit
}

// TestE2EConcurrentRunner is issue 14's "concurrent works end to end",
// with real server and runner processes: a runner with --concurrent 3
// runs three tasks at once (each waits until all three have started);
// its heartbeats keep all three past the heartbeat timeout; aborting one
// stops that one and the others run on to success; killed with SIGKILL
// while it holds three, it loses all three to the queue after the
// heartbeat timeout and they complete on another runner, each after
// exactly one interrupted attempt.
func TestE2EConcurrentRunner(t *testing.T) {
	const heartbeat = 2 * time.Second
	s := startServer(t, "server", "--heartbeat-timeout", heartbeat.String())
	ws := s.setup(t)
	marks := filepath.Join(t.TempDir(), "marks")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(marks, 0o755))
	bigDir := filepath.Join(t.TempDir(), "big")
	big := s.runner(t, "big", s.workerToken(t, "big"), bigDir, "--concurrent", "3", "--metrics-server", "127.0.0.1:0")
	bigMetrics := metricsAddress(t, big)
	checkGOMAXPROCS(t, string(testpeers.ScrapeText(t, bigMetrics+"/metrics")), 3)
	names := func() map[int64]string { return s.workers(t) }

	round := func(name string, want int, n int) []int64 {
		t.Helper()
		dir := filepath.Join(marks, name)
		must(os.Mkdir(dir, 0o755))
		var ids []int64
		for range n {
			wr := s.submit(t, map[string]any{"task_type": "Worker", "task_name": "command", "workspace": ws, "max_retries": 3,
				"task_data": map[string]any{"host_architecture": "amd64", "script": overlapScript,
					"env": map[string]string{"MARKS": marks, "ROUND": dir, "WANT": strconv.Itoa(want)}}})
			ids = append(ids, wr.ID)
		}
		return ids
	}
	exists := func(id int64, suffix string) bool {
		_, err := os.Stat(filepath.Join(marks, fmt.Sprintf("%d.%s", id, suffix)))
		return err == nil
	}
	release := func(id int64) { must(os.WriteFile(filepath.Join(marks, fmt.Sprintf("%d.go", id)), nil, 0o644)) }
	runningOn := func(name string, ids ...int64) bool {
		w := names()
		for _, id := range ids {
			wr := s.get(t, id)
			if wr.Status != "running" || wr.Worker == nil || w[*wr.Worker] != name {
				return false
			}
		}
		return true
	}

	// three at once: each saw the three started before going on
	first := round("first", 3, 3)
	waitFor(t, 30*time.Second, "three tasks running at once", func() bool {
		for _, id := range first {
			if !exists(id, "overlap") {
				return false
			}
		}
		return true
	})
	if !runningOn("big", first...) {
		t.Fatalf("the three tasks do not all run on big: %+v %+v %+v", s.get(t, first[0]), s.get(t, first[1]), s.get(t, first[2]))
	}
	if jobs, limit := jobsHeld(t, bigMetrics); jobs != 3 || limit != 3 {
		t.Errorf("big's metrics: %v jobs, limit %v; want 3 and 3", jobs, limit)
	}
	var page struct {
		Results []struct {
			Busy     bool           `json:"busy"`
			Metadata map[string]any `json:"metadata"`
		} `json:"results"`
	}
	s.call(t, "GET", "/api/1.0/workers/?name=big", nil, 200, &page)
	if len(page.Results) != 1 || !page.Results[0].Busy || page.Results[0].Metadata["system:concurrent"] != float64(3) {
		t.Errorf("worker big: %+v", page.Results)
	}

	// heartbeats keep all three, past twice the timeout
	time.Sleep(2*heartbeat + 500*time.Millisecond)
	for _, id := range first {
		if wr := s.get(t, id); wr.Status != "running" || wr.Retries != 0 {
			t.Fatalf("after two heartbeat timeouts request %d is %s after %d retries", id, wr.Status, wr.Retries)
		}
	}

	// aborting one stops it; the other two go on and succeed
	s.call(t, "POST", fmt.Sprintf("/api/1.0/work-requests/%d/abort/", first[0]), map[string]any{}, 200, nil)
	waitFor(t, 15*time.Second, "the aborted task to stop", func() bool {
		jobs, _ := jobsHeld(t, bigMetrics)
		return jobs == 2
	})
	if !runningOn("big", first[1:]...) {
		t.Fatalf("aborting %d disturbed the others: %+v %+v", first[0], s.get(t, first[1]), s.get(t, first[2]))
	}
	release(first[1])
	if wr := s.waitFinished(t, 30*time.Second, first[1])[first[1]]; wr.Status != "completed" || wr.Result != "success" {
		t.Fatalf("request %d ended %s/%s: %s", first[1], wr.Status, wr.Result, wr.Output)
	}
	if wr := s.get(t, first[0]); wr.Status != "aborted" {
		t.Fatalf("the aborted request is %s", wr.Status)
	}

	// SIGKILL while it holds three: the one left from the first round and
	// two new ones, which start beside it
	second := round("second", 2, 2)
	held := append([]int64{first[2]}, second...)
	waitFor(t, 30*time.Second, "big to hold three again", func() bool {
		return exists(second[0], "overlap") && exists(second[1], "overlap") && runningOn("big", held...)
	})
	big.kill()
	if slices.Contains(tasks.DetectBackends(context.Background()), "unshare") {
		waitFor(t, 5*time.Second, "the killed runner's tasks to die", func() bool { return !taskAlive(bigDir) })
	}
	s.runner(t, "spare", s.workerToken(t, "spare"), filepath.Join(t.TempDir(), "spare"), "--concurrent", "3")
	got := s.waitFinished(t, 30*time.Second, held...)
	w := names()
	for _, id := range held {
		wr := got[id]
		if wr.Status != "completed" || wr.Result != "success" || wr.Retries != 1 || w[*wr.Worker] != "spare" {
			t.Errorf("request %d ended %s/%s after %d retries on %s: %s", id, wr.Status, wr.Result, wr.Retries, w[*wr.Worker], wr.Output)
		}
		// two attempts, the first never ended: nothing ran twice at once
		b, _ := os.ReadFile(filepath.Join(marks, fmt.Sprintf("%d.log", id)))
		if got := strings.Fields(string(b)); !slices.Equal(got, []string{"start", "start", "end"}) {
			t.Errorf("attempts of request %d: %q", id, got)
		}
	}
}
