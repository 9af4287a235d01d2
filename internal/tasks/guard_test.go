package tasks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/tasks"
)

// The tests of this file start this test binary again as a fake runner
// (KILN_FAKE_RUNNER set): it runs one command task the way the runner does
// — under the guard, which is this binary too, with a record and a cgroup
// when one is writable — so that the test can kill it with SIGKILL.
func TestMain(m *testing.M) {
	tasks.RunGuardIfAsked()
	if dir := os.Getenv("KILN_FAKE_RUNNER"); dir != "" {
		os.Exit(fakeRunner(dir))
	}
	os.Exit(m.Run())
}

func fakeRunner(dir string) int {
	log, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return 1
	}
	task := filepath.Join(dir, "task")
	os.MkdirAll(task, 0o750)
	cg, _ := tasks.OpenCgroups(dir)
	data, _ := json.Marshal(map[string]any{"host_architecture": "amd64", "script": os.Getenv("KILN_FAKE_SCRIPT"),
		"backend": os.Getenv("KILN_FAKE_BACKEND")})
	wr := &model.WorkRequest{ID: 7, TaskType: model.TaskWorker, TaskName: "command", Data: data}
	exe, _ := os.Executable()
	out := tasks.RunWorker(context.Background(), wr, &tasks.Env{Dir: task, Log: log, Backends: []string{"host", "unshare"},
		BaseEnv: []string{"PATH=" + os.Getenv("PATH")}, Guard: exe, Cgroups: cg, Record: filepath.Join(dir, "record")})
	fmt.Fprintln(log, "result", out.Result)
	return 0
}

// fakeRun starts the fake runner on script and waits until the script
// has started everything (it touches ready); it returns the runner and
// the processes of the task (its descendants).
func fakeRun(t *testing.T, backend, script string) (*exec.Cmd, string, []proc) {
	t.Helper()
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "KILN_FAKE_RUNNER="+dir, "KILN_FAKE_BACKEND="+backend,
		"KILN_FAKE_SCRIPT="+script+"\ntouch "+ready+"\nsleep 60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		// what a crashed runner leaves for its successor: the cgroups
		if cg, _ := tasks.OpenCgroups(dir); cg != nil {
			cg.Sweep()
			cg.Close()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Fatalf("the task did not start:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // let the last background job fork
	return cmd, dir, descendants(cmd.Process.Pid)
}

// proc is a process, told apart from a later one with the same pid by its
// start time.
type proc struct {
	pid, pgid int
	start     string
	cmd       string
}

// stat reads a process's parent, group, state and start time from /proc.
func stat(pid int) (ppid, pgid int, state, start string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, "", "", false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ppid, _ = strconv.Atoi(f[1])
	pgid, _ = strconv.Atoi(f[2])
	return ppid, pgid, f[0], f[19], true
}

// descendants lists the processes below pid.
func descendants(pid int) []proc {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, _, _, ok := stat(p); ok {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []proc
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			_, pgid, _, start, _ := stat(c)
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c))
			out = append(out, proc{c, pgid, start, strings.ReplaceAll(string(b), "\x00", " ")})
			queue = append(queue, c)
		}
	}
	return out
}

// alive lists the processes of ps that still run (zombies are dead).
func alive(ps []proc) []proc {
	var out []proc
	for _, p := range ps {
		if _, _, state, start, ok := stat(p.pid); ok && start == p.start && state != "Z" {
			out = append(out, p)
		}
	}
	return out
}

// waitGone waits until none of ps runs, and fails naming the survivors.
func waitGone(t *testing.T, ps []proc, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := alive(ps)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes of the task survived its runner %s after it was killed: %v", len(left), within, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// escapes is a script whose children try every way of outliving their
// shell: a background subshell (the report of issue 13), a new session, a
// process that ignores SIGTERM and SIGHUP, one without kiln's marker
// variable, one that daemonises (double fork).
const escapes = `(sleep 60; echo orphan >> f) &
setsid sh -c 'sleep 60' &
(trap "" TERM HUP; sleep 60) &
env -i sh -c 'sleep 60' &
sh -c 'sleep 60 &' &
echo main >> f`

// TestTaskDiesWithItsRunner is defect 1 of issue 13: a script's
// background processes were re-parented to PID 1 when the runner was
// killed with SIGKILL, and kept running (and writing), so that a retry
// could overlap them. Now every process the task started dies with the
// runner, at once, without waiting for a new runner to clean up.
func TestTaskDiesWithItsRunner(t *testing.T) {
	backends := []string{"host"}
	if slices.Contains(tasks.DetectBackends(context.Background()), "unshare") {
		backends = append(backends, "unshare")
	}
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			runner, _, ps := fakeRun(t, backend, escapes)
			if len(ps) < 6 {
				t.Fatalf("the task started only %v", ps)
			}
			runner.Process.Kill()
			runner.Wait()
			waitGone(t, ps, 5*time.Second)
		})
	}
}

// TestLeftoversKilledAtStart: when the guard is killed too (both killed
// with SIGKILL, say by an OOM killer), what the task left is found from
// the runner's record — its process group and, when the runner may create
// one, its cgroup, which holds even processes that left the group and
// dropped kiln's marker — and killed by the next runner at start-up.
func TestLeftoversKilledAtStart(t *testing.T) {
	runner, dir, ps := fakeRun(t, "host", escapes)
	guard := -1
	for _, p := range ps {
		if strings.Contains(p.cmd, tasks.GuardArg) {
			guard = p.pid
		}
	}
	if guard < 0 {
		t.Fatalf("no guard among %v", ps)
	}
	// stopped first, the runner cannot clean up in the moment between the
	// two kills
	runner.Process.Signal(syscall.SIGSTOP)
	syscall.Kill(guard, syscall.SIGKILL)
	runner.Process.Kill()
	runner.Wait()
	time.Sleep(200 * time.Millisecond)
	if len(alive(ps)) == 0 {
		t.Fatal("nothing survived: this test needs leftovers")
	}
	cg, _ := tasks.OpenCgroups(dir)
	killed := tasks.KillRecorded(filepath.Join(dir, "record"))
	if cg == nil {
		// without a cgroup, what left the task's process group is found
		// by kiln's marker variable only; the test cannot tell which of
		// those dropped it, so it asks only for the group
		var left []proc
		for _, p := range ps {
			if p.pgid == guard {
				left = append(left, p)
			}
		}
		ps = left
	}
	waitGone(t, ps, 5*time.Second)
	if killed == 0 {
		t.Error("KillRecorded reports nothing killed")
	}
	if _, err := os.Stat(filepath.Join(dir, "record")); !os.IsNotExist(err) {
		t.Error("the record is still there")
	}
}
