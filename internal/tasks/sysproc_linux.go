package tasks

import "syscall"

// sysProcAttr puts the script in its own process group, so that a timeout
// kills all of it, and has the kernel kill it if the runner dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
