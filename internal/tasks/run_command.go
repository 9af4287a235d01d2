package tasks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// killGrace is how long a cancelled script on the host backend gets
// between SIGTERM and SIGKILL to clean up.
const killGrace = 2 * time.Second

func runCommand(ctx context.Context, wr *model.WorkRequest, env *Env, sampler *diskSampler) Outcome {
	c, err := ParseCommand(wr.Data)
	if err != nil {
		return errorOutcome("%v", err)
	}
	backend, err := ChooseBackend(c.Backend, env.Backends)
	if err != nil {
		return errorOutcome("%v", err)
	}
	if err := env.prepare(); err != nil {
		return errorOutcome("%v", err)
	}
	logf := func(format string, args ...any) { fmt.Fprintf(env.Log, "kiln: "+format+"\n", args...) }
	timeout := time.Duration(*c.Timeout)
	logf("work request %d: command on backend %s, timeout %s", wr.ID, backend, timeout)

	var argv []string
	switch backend {
	case BackendUnshare:
		// --kill-child: the script's PID namespace dies with unshare, and
		// unshare dies with the runner (Pdeathsig), so nothing of a task
		// survives a runner killed with SIGKILL.
		argv = []string{"unshare", "--map-root-user", "--fork", "--pid", "--mount-proc", "--kill-child", "/bin/sh", "-c", c.Script}
	default:
		argv = []string{"/bin/sh", "-c", c.Script}
	}
	t := &taskProcess{guarded: env.Guard != ""}
	if t.guarded {
		// see guard.go; the guard reports the task's usage on its fd 3
		argv = append([]string{env.Guard, GuardArg, strconv.Itoa(guardStatsFD)}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = env.Dir
	cmd.Env = commandEnv(env, wr, c)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = env.Log, env.Log
	var stats *os.File
	if t.guarded {
		r, w, err := os.Pipe()
		if err != nil {
			return errorOutcome("cannot start the script: %v", err)
		}
		defer r.Close()
		stats, cmd.ExtraFiles = r, []*os.File{w}
	}
	var cg *Cgroup
	var cgDir *os.File
	if env.Cgroups != nil {
		if cg, err = env.Cgroups.New("task-" + strconv.FormatInt(wr.ID, 10)); err == nil {
			cgDir, err = cg.Open()
		}
		if err != nil {
			logf("no cgroup of its own for this task: %v", err)
			cg, cgDir = nil, nil
		}
	}
	cmd.SysProcAttr = sysProcAttr(t.guarded, cgDir)
	rec := record{Dir: env.Dir}
	if cg != nil {
		rec.Cgroup = cg.Path()
	}
	t.started = func(pid int) {
		if cgDir != nil {
			cgDir.Close()
		}
		for _, f := range cmd.ExtraFiles {
			f.Close() // the guard has its copy; EOF once it exits
		}
		if env.Record != "" {
			rec.PGID = pid
			if st, ok := readStat(pid); ok {
				rec.Start = st.start
			}
			if err := writeRecord(env.Record, rec); err != nil {
				logf("cannot record the task's processes: %v", err)
			}
		}
	}

	var out Outcome
	// In its own PID namespace the script is init, which ignores SIGTERM,
	// and unshare blocks it while it waits: there, stopping means SIGKILL.
	grace := killGrace
	if backend == BackendUnshare {
		grace = 0
	}
	state, timedOut, cancelled, err := t.run(ctx, cmd, timeout, grace)
	// Whatever the script left behind — in its process group, in its
	// cgroup, under its marker — goes now, so it cannot outlive the task.
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if cg != nil {
		cg.Remove()
	}
	KillStrays(env.Dir)
	if env.Record != "" {
		os.Remove(env.Record)
	}
	if err != nil {
		if cgDir != nil {
			cgDir.Close()
		}
		for _, f := range cmd.ExtraFiles {
			f.Close()
		}
		return errorOutcome("cannot start the script: %v", err)
	}
	if cpu, mem, ok := guardUsage(stats); ok {
		out.Statistics.CPUTime, out.Statistics.Memory = cpu, mem
	} else if ru, ok := state.SysUsage().(*syscall.Rusage); ok && ru != nil {
		out.Statistics.CPUTime = tv(ru.Utime) + tv(ru.Stime)
		out.Statistics.Memory = ru.Maxrss * 1024 // kilobytes on Linux
	}
	code := state.ExitCode()
	out.set("exit_code", code)
	out.set("backend", backend)
	switch {
	case cancelled:
		logf("interrupted")
		out.Result, out.Failure = model.ResultError, FailureCanceled
		out.set("error", "the task was interrupted")
		return out
	case timedOut:
		logf("timed out after %s", timeout)
		out.Result, out.Failure = model.ResultFailure, FailureTimeout
		out.set("error", fmt.Sprintf("timed out after %s", timeout))
		return out
	case code != 0:
		logf("the script failed: %s", state)
		out.Result, out.Failure = model.ResultFailure, FailureScript
		return out
	}
	logf("the script succeeded")
	sampler.sample()

	var ids []int64
	if len(c.Outputs) == 0 {
		out.Result = model.ResultSuccess
		return out
	}
	root, err := os.OpenRoot(env.Dir)
	if err != nil {
		return errorOutcome("opening the working directory: %v", err)
	}
	defer root.Close()
	for _, o := range c.Outputs {
		name := filepath.FromSlash(o.Path)
		if _, err := openOutput(root, name); err != nil {
			logf("declared output %s: %v", o.Path, err)
			out.Result, out.Failure = model.ResultFailure, FailureScript
			out.set("error", fmt.Sprintf("declared output %q was not produced: %v", o.Path, err))
			return out
		}
		if env.Upload == nil {
			return errorOutcome("%v", errNoUpload)
		}
		open := func() (*os.File, error) { return openOutput(root, name) }
		id, err := env.Upload(ctx, Upload{Category: o.Category, Data: o.Data, Name: o.Path, Open: open})
		if err != nil {
			logf("uploading %s failed: %v", o.Path, err)
			out.Result, out.Failure = model.ResultError, FailureUpload
			out.set("error", fmt.Sprintf("uploading %q: %v", o.Path, err))
			return out
		}
		logf("uploaded %s as artifact %d (%s)", o.Path, id, o.Category)
		ids = append(ids, id)
	}
	if len(ids) > 0 {
		out.set("artifacts", ids)
	}
	out.Result = model.ResultSuccess
	return out
}

// errNotRegular refuses an output that is a link, a directory or a device.
var errNotRegular = errors.New("not a regular file")

// openOutput opens an output inside root: a link among its directories is
// followed only while it stays inside root (os.Root refuses the rest), and
// the output itself must be a regular file, not a link.
func openOutput(root *os.Root, name string) (*os.File, error) {
	info, err := root.Lstat(name)
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, errNotRegular
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, errNotRegular // replaced meanwhile
	}
	return f, nil
}

// taskProcess is the top process of a task: the guard, or the script
// itself when there is none.
type taskProcess struct {
	guarded bool
	// started hears the process's pid once it runs.
	started func(pid int)
}

// run starts cmd and waits for it; on timeout, or when ctx ends (after
// SIGTERM to the task's process group and grace), it stops the task: the
// guard is asked to kill every process of the task (SIGUSR1), and the
// process group is killed in any case. The goroutine stays on one OS
// thread from start to wait, because Pdeathsig fires when the thread that
// started the child exits, not the process.
func (t *taskProcess) run(ctx context.Context, cmd *exec.Cmd, timeout, grace time.Duration) (state *os.ProcessState, timedOut, cancelled bool, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return nil, false, false, err
	}
	pgid := cmd.Process.Pid
	if t.started != nil {
		t.started(pgid)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	stop := func() {
		if t.guarded {
			_ = syscall.Kill(pgid, syscall.SIGUSR1)
			select {
			case <-waited:
				waited <- nil
				return
			case <-time.After(killGrace):
			}
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-waited:
		return cmd.ProcessState, false, false, nil
	case <-timer.C:
		timedOut = true
		stop()
	case <-ctx.Done():
		cancelled = true
		if grace > 0 {
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-waited:
				return cmd.ProcessState, false, true, nil
			case <-time.After(grace):
			}
		}
		stop()
	}
	<-waited
	return cmd.ProcessState, timedOut, cancelled, nil
}

// guardUsage reads the usage the guard reported for the task's processes:
// CPU seconds and peak memory in bytes.
func guardUsage(r *os.File) (cpu float64, mem int64, ok bool) {
	if r == nil {
		return 0, 0, false
	}
	b, err := io.ReadAll(io.LimitReader(r, 256))
	if err != nil {
		return 0, 0, false
	}
	var user, sys float64
	var rss int64
	if _, err := fmt.Sscan(string(b), &user, &sys, &rss); err != nil {
		return 0, 0, false
	}
	return user + sys, rss * 1024, true
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// commandEnv is the script's environment: the runner's base environment,
// kiln's variables, then the request's env (which may override the base,
// never the markers kiln relies on).
func commandEnv(env *Env, wr *model.WorkRequest, c *CommandData) []string {
	vars := map[string]string{}
	for _, kv := range env.BaseEnv {
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				vars[kv[:i]] = kv[i+1:]
				break
			}
		}
	}
	vars["HOME"] = env.Dir
	for k, v := range c.Env {
		vars[k] = v
	}
	vars["KILN_WORK_REQUEST"] = strconv.FormatInt(wr.ID, 10)
	vars["KILN_WORKSPACE"] = strconv.FormatInt(wr.WorkspaceID, 10)
	vars["KILN_HOST_ARCHITECTURE"] = c.HostArchitecture
	vars[TaskDirEnv] = env.Dir
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// FileSHA256 returns the hex SHA-256 and size of the file open opens,
// which an artifact declares before its content is uploaded.
func FileSHA256(open func() (*os.File, error)) (string, int64, error) {
	f, err := open()
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
