package tasks

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Every process a task starts must die with its attempt
// (docs/architecture.md#lost-runners): when the script ends, when the
// runner stops it, and when the runner itself is killed with SIGKILL. A process group alone does not do it: a script's
// background subshell or a daemon that calls setsid is re-parented to PID
// 1 when its shell dies and runs on, so a retry on another runner can
// overlap it (issue 13). Pdeathsig alone does not either: the kernel
// clears it at fork, so only the script's shell would die with the
// runner.
//
// So the runner starts each task under a guard: kiln's own executable,
// started with GuardArg, that
//
//   - is a child subreaper (PR_SET_CHILD_SUBREAPER): every process of the
//     task whose parent dies is re-parented to the guard rather than to PID
//     1, so the guard's descendants are all the task's processes, whatever
//     they do with groups and sessions;
//   - runs the script as its only child, with Pdeathsig, and reaps every
//     descendant that ends;
//   - when the script ends, kills all its descendants and exits with the
//     script's status (the attempt is over);
//   - when its runner dies, hears it (the runner starts it with Pdeathsig
//     SIGTERM), kills all its descendants and exits;
//   - on SIGUSR1 (the runner's "stop now", after a timeout or a grace
//     period), kills all its descendants and exits as if killed.
//
// A SIGTERM while the runner lives is the runner's graceful stop, sent to
// the whole process group: the guard lets the script handle it.
//
// The subreaper is the guard rather than the runner itself because a
// subreaper must reap children it did not start, with wait4(-1), which in
// a Go program races os/exec's own waits; the guard starts nothing else.
// What survives even the guard (both killed with SIGKILL at once) is found
// by the runner's record and cgroup (KillRecorded).

// GuardArg is the first argument that makes the kiln executable a task
// guard; the rest is the command of the task.
const GuardArg = "__kiln-task-guard"

// guardStatsFD is the descriptor on which the guard reports, when it
// exits, the resource usage of the task's processes (its own would hide a
// small task's memory peak): the first of the runner's ExtraFiles. The
// guard's first argument says whether it has one ("3") or not ("-").
const guardStatsFD = 3

// RunGuardIfAsked runs the process as a task guard, and exits, when it was
// started as one. Call it first in main, and in the TestMain of packages
// whose tests run tasks under a guard.
func RunGuardIfAsked() {
	if len(os.Args) > 1 && os.Args[1] == GuardArg {
		os.Exit(guard(os.Args[2:]))
	}
}

const (
	prSetChildSubreaper = 36 // PR_SET_CHILD_SUBREAPER of prctl(2)
	// exitKilled is the status of a guard whose task it killed.
	exitKilled = 128 + int(syscall.SIGKILL)
)

func guard(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "kiln task guard: usage: kiln "+GuardArg+" <stats fd or -> <command…>")
		return 125
	}
	stats, argv := args[0] == strconv.Itoa(guardStatsFD), args[1:]
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		fmt.Fprintf(os.Stderr, "kiln task guard: cannot become a child subreaper: %v\n", e)
		return 125
	}
	parent := os.Getppid()
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "kiln task guard: %v\n", err)
		return 127
	}
	// the task shares the guard's process group (the runner signals the
	// group); it dies if the guard is killed
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}})
	if err != nil {
		fmt.Fprintf(os.Stderr, "kiln task guard: starting %s: %v\n", argv[0], err)
		return 126
	}
	if os.Getppid() != parent {
		killDescendants()
		return exitKilled
	}
	exited := make(chan syscall.WaitStatus, 1)
	empty := make(chan struct{})
	go reap(pid, exited, empty)
	end := func() {
		killDescendants()
		select { // all reaped, so that their usage is counted
		case <-empty:
		case <-time.After(2 * time.Second):
		}
		if stats {
			reportUsage()
		}
	}
	for {
		select {
		case st := <-exited:
			end() // the script is done: so is its attempt
			return exitStatus(st)
		case sig := <-sigs:
			if sig != syscall.SIGUSR1 && os.Getppid() == parent {
				continue // the runner's graceful stop: the script got it too
			}
			end()
			return exitKilled
		}
	}
}

// reap waits for every process re-parented to the guard, sends the status
// of the task's own process to exited, and closes empty once the guard has
// no child left.
func reap(task int, exited chan<- syscall.WaitStatus, empty chan<- struct{}) {
	defer close(empty)
	for {
		var st syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &st, 0, nil)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil: // ECHILD: nobody left
			return
		case pid == task && (st.Exited() || st.Signaled()):
			exited <- st
		}
	}
}

// killDescendants kills every process below the guard with SIGKILL, until
// none is left: those that fork meanwhile are re-parented to the guard
// and found by the next round.
func killDescendants() {
	self := os.Getpid()
	for round := 0; round < 1000; round++ {
		ps := descendantsOf(self)
		if len(ps) == 0 {
			return
		}
		for _, p := range ps {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(time.Millisecond)
	}
}

// descendantsOf lists the live processes below pid, from /proc.
func descendantsOf(pid int) []int {
	children := map[int][]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(p); ok && st.state != "Z" {
			children[st.ppid] = append(children[st.ppid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, children[p]...)
		queue = append(queue, children[p]...)
	}
	return out
}

// procStat is what kiln reads of /proc/PID/stat.
type procStat struct {
	state      string
	ppid, pgid int
	start      uint64 // clock ticks after boot
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return procStat{}, false
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 20 {
		return procStat{}, false
	}
	var st procStat
	st.state = f[0]
	st.ppid, _ = strconv.Atoi(f[1])
	st.pgid, _ = strconv.Atoi(f[2])
	st.start, _ = strconv.ParseUint(f[19], 10, 64)
	return st, true
}

// exitStatus turns the task's wait status into the guard's exit: its exit
// code, or the same signal, so that the runner sees what the script did.
func exitStatus(st syscall.WaitStatus) int {
	if st.Signaled() {
		sig := st.Signal()
		signal.Reset(sig)
		_ = syscall.Kill(os.Getpid(), sig)
		time.Sleep(100 * time.Millisecond) // a signal that does not end us
		return 128 + int(sig)
	}
	return st.ExitStatus()
}

// reportUsage writes the resource usage of the task's processes (all of
// them were reaped by the guard) to guardStatsFD: "<user seconds> <system
// seconds> <peak RSS in KiB>".
func reportUsage() {
	f := os.NewFile(guardStatsFD, "stats")
	defer f.Close()
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) != nil {
		return
	}
	fmt.Fprintf(f, "%f %f %d\n", tv(ru.Utime), tv(ru.Stime), ru.Maxrss)
}
