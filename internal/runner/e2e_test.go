package runner_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/testdb"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestE2EMixedFarm is "done when" 1: a server and two runner processes of
// different architectures (amd64+i386 by flag, arm64 by config file) take
// 30 mixed requests with dependencies; each lands on a runner that matches
// it, all complete, outputs download with the right sha256 and logs read.
func TestE2EMixedFarm(t *testing.T) {
	s := startServer(t, "server", "--heartbeat-timeout", "5s")
	ws := s.setup(t)
	x86 := s.workerToken(t, "x86")
	arm := s.workerToken(t, "arm")
	x86Dir, armDir := filepath.Join(t.TempDir(), "x86"), filepath.Join(t.TempDir(), "arm")
	s.runner(t, "x86", x86, x86Dir, "--architectures", "amd64,i386")
	conf := filepath.Join(t.TempDir(), "arm.toml")
	if err := os.WriteFile(conf, []byte("architectures = [\"arm64\"]\nhost_architecture = \"arm64\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.runner(t, "arm", arm, armDir, "--config", conf)

	archs := []string{"amd64", "i386", "arm64"}
	type expect struct {
		arch    string
		content string // of the output, "" when none
		log     string // a line the log must hold
	}
	want := map[int64]expect{}
	var ids []int64
	var prev int64
	for i := range 30 {
		arch := archs[i%3]
		body := map[string]any{"task_type": "Worker", "workspace": ws}
		var e expect
		switch {
		case i%5 == 4:
			body["task_name"] = "noop"
			body["task_data"] = map[string]any{"host_architecture": arch}
		default:
			e.content = fmt.Sprintf("artifact %d for %s\n", i, arch)
			e.log = fmt.Sprintf("building %d on $KILN_HOST_ARCHITECTURE", i)
			body["task_name"] = "command"
			body["task_data"] = map[string]any{"host_architecture": arch, "backend": []string{"auto", "host"}[i%2],
				"script":  fmt.Sprintf("echo %s; mkdir -p out; echo 'artifact %d for %s' > out/result.txt", e.log, i, arch),
				"outputs": []map[string]string{{"path": "out/result.txt", "category": "e2e:result"}}}
			e.log = strings.ReplaceAll(e.log, "$KILN_HOST_ARCHITECTURE", arch)
		}
		if i%4 == 3 && prev != 0 {
			body["dependencies"] = []int64{prev} // a chain across architectures
		}
		e.arch = arch
		wr := s.submit(t, body)
		want[wr.ID], prev = e, wr.ID
		ids = append(ids, wr.ID)
	}
	got := s.waitFinished(t, 120*time.Second, ids...)
	names := s.workers(t)
	for _, id := range ids {
		wr, e := got[id], want[id]
		if wr.Status != "completed" || wr.Result != "success" {
			t.Errorf("request %d (%s) ended %s/%s: %s", id, e.arch, wr.Status, wr.Result, wr.Output)
			continue
		}
		runnerName := names[*wr.Worker]
		if (e.arch == "arm64") != (runnerName == "arm") {
			t.Errorf("request %d for %s ran on %s", id, e.arch, runnerName)
		}
		if wr.Stats == nil || wr.Stats.Duration <= 0 {
			t.Errorf("request %d has no runtime statistics", id)
		}
		if e.content == "" {
			continue
		}
		var arts struct {
			Results []struct {
				ID    int64 `json:"id"`
				Files []struct {
					Path   string `json:"path"`
					SHA256 string `json:"sha256"`
				} `json:"files"`
			} `json:"results"`
		}
		s.call(t, "GET", fmt.Sprintf("/api/1.0/artifacts/?work_request=%d&category=e2e:result", id), nil, 200, &arts)
		if len(arts.Results) != 1 || arts.Results[0].Files[0].SHA256 != sha(e.content) {
			t.Errorf("request %d: output artifacts %+v", id, arts.Results)
			continue
		}
		var data []byte
		s.call(t, "GET", fmt.Sprintf("/api/1.0/artifacts/%d/files/out/result.txt", arts.Results[0].ID), nil, 200, &data)
		if sha(string(data)) != sha(e.content) {
			t.Errorf("request %d: downloaded %q", id, data)
		}
		var log []byte
		s.call(t, "GET", fmt.Sprintf("/api/1.0/work-requests/%d/logs/", id), nil, 200, &log)
		if !strings.Contains(string(log), e.log) {
			t.Errorf("request %d: log lacks %q:\n%s", id, e.log, log)
		}
	}
	// no task left its working directory or its log behind (a noop never
	// had either: tasks.TestPrepareOnlyWhenUsed)
	for _, dir := range []string{x86Dir, armDir} {
		for _, sub := range []string{"tasks", "logs"} {
			if ents, err := os.ReadDir(filepath.Join(dir, sub)); err != nil || len(ents) != 0 {
				t.Errorf("%s/%s holds %v (%v) once every request finished", dir, sub, ents, err)
			}
		}
	}
	// dependencies held: a dependent started after its dependency ended
	for id, wr := range got {
		var full struct {
			Dependencies []int64 `json:"dependencies"`
		}
		s.call(t, "GET", fmt.Sprintf("/api/1.0/work-requests/%d/", id), nil, 200, &full)
		for _, d := range full.Dependencies {
			if wr.StartedAt.Before(*got[d].FinishedAt) {
				t.Errorf("request %d started before its dependency %d finished", id, d)
			}
		}
	}
}

// TestE2EKillRunnerMidTask is "done when" 2, twenty times: a runner killed
// with SIGKILL in the middle of a task loses it to the other runner after
// the heartbeat timeout; the request completes there, and no attempt ever
// overlaps another.
func TestE2EKillRunnerMidTask(t *testing.T) {
	s := startServer(t, "server", "--heartbeat-timeout", "2s")
	ws := s.setup(t)
	marks := filepath.Join(t.TempDir(), "marks")
	if err := os.Mkdir(marks, 0o755); err != nil {
		t.Fatal(err)
	}
	type member struct {
		name, token, dir string
		p                *procRef
	}
	runners := map[string]*member{}
	for _, name := range []string{"a", "b"} {
		m := &member{name: name, token: s.workerToken(t, name), dir: filepath.Join(t.TempDir(), name)}
		m.p = &procRef{s.runner(t, name, m.token, m.dir)}
		runners[name] = m
	}
	unshare := slices.Contains(tasks.DetectBackends(context.Background()), "unshare")
	// The first attempt of each request marks its start and hangs; any
	// later attempt finds the marker and finishes.
	script := `echo "start $(date +%s%N)" >> ` + marks + `/$KILN_WORK_REQUEST.log
if [ ! -e ` + marks + `/$KILN_WORK_REQUEST.first ]; then touch ` + marks + `/$KILN_WORK_REQUEST.first; sleep 60; fi
echo "end $(date +%s%N)" >> ` + marks + `/$KILN_WORK_REQUEST.log`
	for i := range 20 {
		wr := s.submit(t, map[string]any{"task_type": "Worker", "task_name": "command", "workspace": ws, "max_retries": 3,
			"task_data": map[string]any{"host_architecture": "amd64", "script": script}})
		first := filepath.Join(marks, fmt.Sprintf("%d.first", wr.ID))
		waitFor(t, 30*time.Second, fmt.Sprintf("request %d to start", wr.ID), func() bool {
			_, err := os.Stat(first)
			return err == nil
		})
		running := s.get(t, wr.ID)
		if running.Worker == nil {
			t.Fatalf("iteration %d: request %d started but is assigned to no worker: %+v", i, wr.ID, running)
		}
		victim := runners[s.workers(t)[*running.Worker]]
		victim.p.kill()
		if unshare {
			// the task's processes died with their runner
			waitFor(t, 5*time.Second, "the killed runner's task to die", func() bool { return !taskAlive(victim.dir) })
		}
		done := s.waitFinished(t, 30*time.Second, wr.ID)[wr.ID]
		if done.Status != "completed" || done.Result != "success" || done.Retries != 1 {
			t.Fatalf("iteration %d: request %d ended %s/%s after %d retries: %s", i, wr.ID, done.Status, done.Result, done.Retries, done.Output)
		}
		if got := s.workers(t)[*done.Worker]; got == victim.name {
			t.Fatalf("iteration %d: request %d completed on the killed runner %s", i, wr.ID, got)
		}
		// exactly two attempts, the second after the first: the first never
		// ended, the second ran to its end
		b, _ := os.ReadFile(filepath.Join(marks, fmt.Sprintf("%d.log", wr.ID)))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "start") || !strings.HasPrefix(lines[1], "start") || !strings.HasPrefix(lines[2], "end") {
			t.Fatalf("iteration %d: attempts of request %d:\n%s", i, wr.ID, b)
		}
		// the killed runner comes back with its token and work directory
		victim.p = &procRef{s.runner(t, victim.name, victim.token, victim.dir)}
	}
}

// procRef lets a test replace a runner process it restarts.
type procRef struct{ *proc }

// taskAlive reports whether a process of a task of the runner with work
// directory dir still runs (found by the marker variable tasks set).
func taskAlive(dir string) bool {
	ents, _ := os.ReadDir("/proc")
	marker := tasks.TaskDirEnv + "=" + filepath.Join(dir, "tasks")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && strings.Contains(string(b), marker) {
			return true
		}
	}
	return false
}

// TestE2ETwoServersOnePostgres is "done when" 3: two server processes on
// one PostgreSQL database and four runners, two on each; 200 requests run
// exactly once each, as counted by the runners themselves.
func TestE2ETwoServersOnePostgres(t *testing.T) {
	dsn := testdb.Postgres(t)
	s1 := startServer(t, "server-1", "--database", dsn, "--heartbeat-timeout", "10s")
	s2 := startServer(t, "server-2", "--database", dsn, "--heartbeat-timeout", "10s")
	ws := s1.setup(t)
	marks := filepath.Join(t.TempDir(), "marks")
	for i, s := range []*server{s1, s1, s2, s2} {
		name := fmt.Sprintf("runner-%d", i+1)
		s.runner(t, name, s1.workerToken(t, name), filepath.Join(t.TempDir(), name))
	}
	var ids []int64
	for i := range 200 {
		s := []*server{s1, s2}[i%2]
		body := map[string]any{"task_type": "Worker", "task_name": "command", "workspace": ws,
			"task_data": map[string]any{"host_architecture": "amd64", "backend": "host",
				"script": "echo $KILN_WORK_REQUEST >> " + marks}}
		if i%10 == 0 {
			body["task_name"], body["task_data"] = "noop", map[string]any{"host_architecture": "amd64"}
		}
		ids = append(ids, s.submit(t, body).ID)
	}
	got := s2.waitFinished(t, 180*time.Second, ids...)
	used := map[int64]int{}
	for _, id := range ids {
		wr := got[id]
		if wr.Status != "completed" || wr.Result != "success" || wr.Retries != 0 {
			t.Errorf("request %d ended %s/%s after %d retries: %s", id, wr.Status, wr.Result, wr.Retries, wr.Output)
		}
		used[*wr.Worker]++
	}
	// both servers handed out work: runners 1-2 talk to the first, 3-4 to
	// the second
	names := s1.workers(t)
	perServer := [2]int{}
	for w, n := range used {
		switch names[w] {
		case "runner-1", "runner-2":
			perServer[0] += n
		case "runner-3", "runner-4":
			perServer[1] += n
		}
	}
	if perServer[0] == 0 || perServer[1] == 0 {
		t.Errorf("work per server: %v", perServer)
	}
	b, err := os.ReadFile(marks)
	if err != nil {
		t.Fatal(err)
	}
	runs := map[string]int{}
	for _, l := range strings.Fields(string(b)) {
		runs[l]++
	}
	commands := 0
	for _, id := range ids {
		var wr struct {
			TaskName string `json:"task_name"`
		}
		s1.call(t, "GET", fmt.Sprintf("/api/1.0/work-requests/%d/", id), nil, 200, &wr)
		if wr.TaskName != "command" {
			continue
		}
		commands++
		if n := runs[strconv.FormatInt(id, 10)]; n != 1 {
			t.Errorf("request %d ran %d times", id, n)
		}
	}
	if len(runs) != commands {
		t.Errorf("%d requests ran, %d were submitted", len(runs), commands)
	}
}
