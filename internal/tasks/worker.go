package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// TaskDirEnv is set in the environment of every process a task starts, to
// the task's working directory. The runner finds a task's stray processes
// (daemons that left the process group, leftovers of a runner killed with
// SIGKILL) by it, and nothing else: it never kills what it did not start.
const TaskDirEnv = "KILN_TASK_DIR"

// Upload asks the runner to store a file of the working directory as an
// artifact of the running request; it returns the artifact's id.
type Upload struct {
	Category string
	Data     json.RawMessage
	// Name is the file's name in the artifact.
	Name string
	// Open opens the file's content, afresh at each call (the runner
	// reads it once to hash it and once to send it). Outputs are opened
	// through an os.Root on the task directory: a symbolic link that leads
	// out of it is not followed, so a task cannot make the runner upload a
	// file it was not given (ln -s /etc d; output d/passwd).
	Open func() (*os.File, error)
}

// Env is what the runner gives a worker task.
type Env struct {
	// Dir is a fresh, empty working directory that belongs to this task
	// alone; the runner removes it afterwards. When Prepare is set, Dir
	// does not exist until a task has called it.
	Dir string
	// Log receives the task's log. Processes write to it directly (it is
	// a real file, so no copying goroutine can hold up the end of a task
	// whose background processes keep their output open); the runner
	// streams it to the server by following the file. When Prepare is
	// set, Log is nil until a task has called it.
	Log *os.File
	// Prepare, when not nil, makes Dir and opens Log. A task that uses
	// either asks for them first (Env.prepare); one that uses neither,
	// such as noop, never does. Making two inodes per task was most of a
	// runner's CPU per noop on an ext4 volume (docs/benchmarks.md#claims);
	// a command pays it as before.
	Prepare func() (*os.File, error)
	// Backends are the backends this runner offers.
	Backends []string
	// BaseEnv is the environment scripts start from (PATH, LANG, …).
	BaseEnv []string
	// Upload stores an output as an artifact; nil means outputs cannot be
	// uploaded (tests of scripts alone).
	Upload func(ctx context.Context, u Upload) (int64, error)
	// Guard is kiln's own executable, under which the task's processes
	// run (guard.go): it sees and kills every one of them when the task
	// ends, is stopped, or its runner dies. "" runs the script directly
	// (tests of scripts alone); its processes then die with their
	// runner only in the unshare backend.
	Guard string
	// Cgroups, when not nil, puts each task in a cgroup v2 of its own
	// (cgroup.go), which holds even processes that left the task's
	// process group and dropped its marker.
	Cgroups *Cgroups
	// Record is a file where the task's process group and cgroup are
	// written while it runs, so that KillRecorded can kill what is left
	// after a crash of the runner and of the guard; "" records nothing.
	Record string
	// DiskSampleInterval is how often the working directory is measured
	// while the task runs; 0 means DefaultDiskSampleInterval.
	DiskSampleInterval time.Duration
}

// DefaultDiskSampleInterval is how often a running task's working directory
// is measured for peak disk_space. Walking a big tree costs I/O, so it is
// not done more often than this.
const DefaultDiskSampleInterval = 500 * time.Millisecond

// Outcome is how a task ended, as reported to the server.
type Outcome struct {
	Result     model.Result
	Output     map[string]any
	Statistics model.RuntimeStatistics
	// Failure says why a task that did not succeed failed; empty on
	// success. It stays on the runner (kiln_runner_failed_jobs_total).
	Failure Failure
}

// Failure is why a task failed, in GitLab Runner's failure_reason words
// (gitlab_runner_failed_jobs_total), which operators' alerts already use:
// the script's fault, the clock's, the runner's or the upload's.
type Failure string

// The reasons a task fails.
const (
	// FailureScript: the script exited non-zero or did not produce a
	// declared output.
	FailureScript Failure = "script_failure"
	// FailureTimeout: the script ran past its timeout.
	FailureTimeout Failure = "job_execution_timeout"
	// FailureCanceled: the task was interrupted (aborted, given to another
	// runner).
	FailureCanceled Failure = "job_canceled"
	// FailureSystem: the runner could not run the task at all (working
	// directory, backend, unknown task).
	FailureSystem Failure = "runner_system_failure"
	// FailureUpload: a declared output could not be uploaded.
	FailureUpload Failure = "upload_failure"
)

// Failures lists every Failure, for metrics that show each from the start.
func Failures() []Failure {
	return []Failure{FailureScript, FailureTimeout, FailureCanceled, FailureSystem, FailureUpload}
}

// prepare makes the working directory and opens the log, once, for a
// task that is about to use them.
func (e *Env) prepare() error {
	if e.Log != nil || e.Prepare == nil {
		return nil
	}
	f, err := e.Prepare()
	if err != nil {
		return err
	}
	e.Log = f
	return nil
}

func (o *Outcome) set(k string, v any) {
	if o.Output == nil {
		o.Output = map[string]any{}
	}
	o.Output[k] = v
}

func errorOutcome(format string, args ...any) Outcome {
	o := Outcome{Result: model.ResultError, Failure: FailureSystem}
	o.set("error", fmt.Sprintf(format, args...))
	return o
}

// RunWorker runs a Worker task and measures it. ctx ending (the request was
// aborted, or the runner gives it back at shutdown) kills the task's
// processes; the outcome then says so with ResultError. Every process a
// task started is dead when RunWorker returns: a task that starts
// processes kills what they left behind itself (runCommand: its process
// group, then KillStrays), so that tasks that start none, such as noop,
// cost no scan of /proc.
func RunWorker(ctx context.Context, wr *model.WorkRequest, env *Env) Outcome {
	start := time.Now()
	sampler := startDiskSampler(env.Dir, env.DiskSampleInterval)
	var out Outcome
	switch wr.TaskName {
	case Noop:
		out = Outcome{Result: model.ResultSuccess}
	case Command:
		out = runCommand(ctx, wr, env, sampler)
	default:
		out = errorOutcome("this runner does not know the task %q", wr.TaskName)
	}
	out.Statistics.DiskSpace = sampler.stop()
	out.Statistics.Duration = time.Since(start).Seconds()
	if ctx.Err() != nil && out.Result == model.ResultSuccess {
		out.Result = model.ResultError
		out.Failure = FailureCanceled
		out.set("error", "the task was interrupted")
	}
	return out
}

// diskSampler measures the peak size of a directory tree.
type diskSampler struct {
	dir  string
	mu   sync.Mutex
	peak int64
	done chan struct{}
	wg   sync.WaitGroup
}

func startDiskSampler(dir string, every time.Duration) *diskSampler {
	if every <= 0 {
		every = DefaultDiskSampleInterval
	}
	s := &diskSampler{dir: dir, done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *diskSampler) sample() {
	n := DirSize(s.dir)
	s.mu.Lock()
	s.peak = max(s.peak, n)
	s.mu.Unlock()
}

// stop takes a last sample and returns the peak.
func (s *diskSampler) stop() int64 {
	close(s.done)
	s.wg.Wait()
	s.sample()
	return s.peak
}

// DirSize is the total apparent size of the regular files under dir.
// Files that vanish while it walks are skipped: it measures a directory that
// a running task is changing.
func DirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// KillStrays kills, with SIGKILL, every process of this user whose
// environment has KILN_TASK_DIR=dir: what a task left running after its
// process group was killed (a daemon that called setsid, say), or what
// survived a runner killed with SIGKILL. It returns how many it killed. It
// is Linux-only (it reads /proc) and does nothing elsewhere.
func KillStrays(dir string) int {
	marker := []byte(TaskDirEnv + "=" + dir + "\x00")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	killed := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		if containsEnv(b, marker) {
			if p, err := os.FindProcess(pid); err == nil && p.Kill() == nil {
				killed++
			}
		}
	}
	return killed
}

// containsEnv reports whether a NUL-separated environment block holds the
// entry marker (which ends with NUL).
func containsEnv(block, marker []byte) bool {
	want := marker[:len(marker)-1]
	for len(block) > 0 {
		e := block
		if i := bytes.IndexByte(block, 0); i >= 0 {
			e, block = block[:i], block[i+1:]
		} else {
			block = nil
		}
		if bytes.Equal(e, want) {
			return true
		}
	}
	return false
}

var errNoUpload = errors.New("this runner cannot upload artifacts")
