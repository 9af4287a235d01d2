package tasks

import (
	"os"
	"syscall"
)

// sysProcAttr puts the task's top process in its own process group, so
// that a stop reaches all of it, and in the task's cgroup when there is
// one (cgroup, CLONE_INTO_CGROUP: it never runs outside). The kernel
// signals it when the runner dies: SIGKILL for a script, SIGTERM for the
// guard, which then kills every process of the task (guard.go).
func sysProcAttr(guarded bool, cgroup *os.File) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if guarded {
		a.Pdeathsig = syscall.SIGTERM
	}
	if cgroup != nil {
		a.UseCgroupFD, a.CgroupFD = true, int(cgroup.Fd())
	}
	return a
}
