package faults_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testdb"
)

// escapes spawns processes that try every way of outliving their shell: a
// background subshell that writes later (the report of issue 13), a new
// session, one that ignores SIGTERM and SIGHUP, one without kiln's marker
// variable, a daemon (double fork) and nohup.
const escapes = `(sleep 60; echo orphan >> orphans) &
setsid sh -c 'sleep 60' &
(trap "" TERM HUP; sleep 60) &
env -i sh -c 'sleep 60' &
sh -c 'sleep 60 &' &
nohup sleep 60 >/dev/null 2>&1 &
`

// TestRunnerKillLeavesNoProcess kills a runner with SIGKILL 100 times,
// each time in the middle of a task (host backend) whose script has
// started the escapes above, and counts in /proc, before any new runner
// could clean up, the processes of the task still alive: there must be
// none (issue 13, defect 1).
func TestRunnerKillLeavesNoProcess(t *testing.T) {
	const attempts = 100
	s := startServer(t)
	ws := s.setup(t)
	marks := t.TempDir()
	workDir := filepath.Join(t.TempDir(), "runner")
	token := s.workerToken(t, "victim")
	script := escapes + "echo started >> " + marks + "/$KILN_WORK_REQUEST\nsleep 60"
	for range attempts {
		s.must(t, "POST", "/api/1.0/work-requests/", map[string]any{"task_type": "Worker", "task_name": "command",
			"workspace": ws, "max_retries": 0,
			"task_data": map[string]any{"host_architecture": "amd64", "backend": "host", "script": script}}, 201, nil)
	}
	started := func() int {
		ents, _ := os.ReadDir(marks)
		return len(ents)
	}
	begin := time.Now()
	for i := range attempts {
		r := s.runner(t, "victim", token, workDir)
		waitFor(t, 30*time.Second, fmt.Sprintf("task %d to start", i+1), func() bool { return started() == i+1 })
		ps := descendants(r.cmd.Process.Pid)
		if len(ps) < 8 { // guard, shell, and the escapes
			t.Fatalf("attempt %d: the task runs only %v", i+1, ps)
		}
		r.kill()
		deadline := time.Now().Add(3 * time.Second)
		for {
			left := append(alive(ps), marked(workDir)...)
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("attempt %d: %d processes of the task outlived their runner by 3 s: %v", i+1, len(left), left)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Logf("%d runners killed mid-task in %s; no process outlived one", attempts, time.Since(begin).Round(time.Millisecond))
	// each request started once, and no orphan ever wrote
	for id, n := range lines(t, filepath.Join(marks, "orphans")) {
		t.Errorf("an orphan wrote %q %d times", id, n)
	}
	ents, _ := os.ReadDir(marks)
	for _, e := range ents {
		if n := lines(t, filepath.Join(marks, e.Name()))["started"]; n != 1 {
			t.Errorf("request %s started %d times", e.Name(), n)
		}
	}
}

// TestServerKillDuringSubmission kills the server with SIGKILL while four
// clients submit work and a runner runs it, then starts it again on the
// same database: every acknowledged submission, and every request the
// database holds, runs exactly once, and `kiln metrics recount` finds
// every running total right. On SQLite and on PostgreSQL.
func TestServerKillDuringSubmission(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		const total, killAt = 40, 12
		s := startServer(t, "--database", dsn, "--heartbeat-timeout", "5s")
		ws := s.setup(t)
		runs := filepath.Join(t.TempDir(), "runs")
		s.runner(t, "r1", s.workerToken(t, "r1"), filepath.Join(t.TempDir(), "r1"))
		body, _ := json.Marshal(map[string]any{"task_type": "Worker", "task_name": "command", "workspace": ws,
			"task_data": map[string]any{"host_architecture": "amd64", "backend": "host", "script": "echo $KILN_WORK_REQUEST >> " + runs}})

		var mu sync.Mutex
		var acked []int64
		failed := 0
		submit := func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", s.url+"/api/1.0/work-requests/", bytes.NewReader(body))
			req.Header.Set("Authorization", "Token "+adminToken)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++ // the server died: maybe stored, maybe not
				time.Sleep(20 * time.Millisecond)
				return
			}
			defer resp.Body.Close()
			var wr workRequest
			if resp.StatusCode == 201 && json.NewDecoder(resp.Body).Decode(&wr) == nil {
				acked = append(acked, wr.ID)
			} else {
				failed++
			}
		}
		count := func() int {
			mu.Lock()
			defer mu.Unlock()
			return len(acked)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for count() < total {
					submit()
				}
			}()
		}
		waitFor(t, 60*time.Second, "submissions before the kill", func() bool { return count() >= killAt })
		begin := time.Now()
		s.kill() // in the middle of submissions, claims and results
		s.restart(t)
		t.Logf("the server was back after %s", time.Since(begin).Round(time.Millisecond))
		wg.Wait()
		t.Logf("%d submissions acknowledged, %d not (the server was down)", count(), failed)

		// everything the database holds runs to its end, once
		var page struct {
			Results []workRequest `json:"results"`
		}
		waitFor(t, 120*time.Second, "every request to finish", func() bool {
			s.must(t, "GET", "/api/1.0/work-requests/?limit=1000", nil, 200, &page)
			for _, wr := range page.Results {
				if wr.Status != "completed" && wr.Status != "aborted" {
					return false
				}
			}
			return true
		})
		t.Logf("all finished %s after the kill", time.Since(begin).Round(time.Millisecond))
		ran := lines(t, runs)
		stored := map[int64]bool{}
		for _, wr := range page.Results {
			stored[wr.ID] = true
			if wr.Status != "completed" || wr.Result != "success" {
				t.Errorf("request %d ended %s/%s after %d retries: %s", wr.ID, wr.Status, wr.Result, wr.Retries, wr.Output)
			}
			if n := ran[strconv.FormatInt(wr.ID, 10)]; n != 1 {
				t.Errorf("request %d ran %d times", wr.ID, n)
			}
		}
		for _, id := range acked {
			if !stored[id] {
				t.Errorf("acknowledged request %d was lost", id)
			}
		}
		if len(ran) != len(stored) {
			t.Errorf("%d requests ran, the database holds %d", len(ran), len(stored))
		}
		s.stop()
		db := []string{"--database", dsn}
		if code, out := kiln(t, append([]string{"metrics", "recount"}, db...)...); code != 0 {
			t.Errorf("kiln metrics recount after the kill: exit %d\n%s", code, out)
		}
	})
}

// TestDiskFull fills the file store (its max_size): the output that does
// not fit is refused with a clear error before a byte is stored, the total
// stays what the stored files weigh, and nothing half-stored remains once
// `kiln expire` has removed the artifact whose upload was refused. An
// output that fits still goes.
func TestDiskFull(t *testing.T) {
	s := startServer(t)
	ws := s.setup(t)
	var stores struct {
		Results []struct {
			ID        int64 `json:"id"`
			TotalSize int64 `json:"total_size"`
		} `json:"results"`
	}
	s.must(t, "GET", "/api/1.0/file-stores/", nil, 200, &stores)
	storePath := fmt.Sprintf("/api/1.0/file-stores/%d/", stores.Results[0].ID)
	s.must(t, "PATCH", storePath, map[string]any{"max_size": 8000}, 200, nil)
	s.runner(t, "r1", s.workerToken(t, "r1"), filepath.Join(t.TempDir(), "r1"))

	run := func(size int) workRequest {
		var wr workRequest
		s.must(t, "POST", "/api/1.0/work-requests/", map[string]any{"task_type": "Worker", "task_name": "command", "workspace": ws,
			"task_data": map[string]any{"host_architecture": "amd64", "backend": "host",
				"script": fmt.Sprintf("head -c %d /dev/zero | tr '\\0' x > out.bin", size), "outputs": []map[string]any{{"path": "out.bin"}}}}, 201, &wr)
		waitFor(t, 60*time.Second, "the request to finish", func() bool {
			wr = s.get(t, wr.ID)
			return wr.Status == "completed"
		})
		return wr
	}
	big := run(20000)
	if big.Result != "error" || !strings.Contains(string(big.Output), "full") {
		t.Fatalf("an output bigger than the store's room: %s %s", big.Result, big.Output)
	}
	small := run(100)
	if small.Result != "success" {
		t.Fatalf("an output that fits: %s %s", small.Result, small.Output)
	}

	// nothing of the refused output is stored
	sum := sha256.Sum256(bytes.Repeat([]byte("x"), 20000))
	sha := hex.EncodeToString(sum[:])
	if _, err := os.Stat(filepath.Join(s.dataDir, "files", sha[0:2], sha[2:4], sha)); !os.IsNotExist(err) {
		t.Errorf("the refused output's content is in the file store: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.dataDir, "files", ".tmp")); len(ents) != 0 {
		t.Errorf("partial uploads left: %v", ents)
	}
	var fs struct {
		TotalSize int64 `json:"total_size"`
	}
	s.must(t, "GET", storePath, nil, 200, &fs)
	var arts struct {
		Results []struct {
			ID    int64 `json:"id"`
			Files []struct {
				Size     int64 `json:"size"`
				Complete bool  `json:"complete"`
			} `json:"files"`
		} `json:"results"`
	}
	s.must(t, "GET", "/api/1.0/artifacts/?limit=1000", nil, 200, &arts)
	var complete int64
	incomplete := 0
	for _, a := range arts.Results {
		for _, f := range a.Files {
			if f.Complete {
				complete += f.Size
			} else {
				incomplete++
			}
		}
	}
	if fs.TotalSize != complete || fs.TotalSize > 8000 {
		t.Errorf("file store total_size %d; its complete files weigh %d", fs.TotalSize, complete)
	}
	if incomplete != 1 {
		t.Errorf("%d incomplete files, want the refused output's", incomplete)
	}
	// the declared artifact of the refused output goes with kiln expire
	if code, out := kiln(t, "expire", "--data-dir", s.dataDir, "--incomplete-grace", "1ms"); code != 0 || !strings.Contains(out, "removed 1 incomplete artifacts") {
		t.Fatalf("kiln expire: %d\n%s", code, out)
	}
	if code, out := kiln(t, "metrics", "recount", "--data-dir", s.dataDir); code != 0 {
		t.Errorf("kiln metrics recount: exit %d\n%s", code, out)
	}
}
