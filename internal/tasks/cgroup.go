package tasks

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A cgroup v2 holds every process started in it, whatever the process
// does with groups, sessions and its environment, and cgroup.kill kills
// them all at once: the strongest hold on a task's processes short of a
// PID namespace. It needs a cgroup the runner may write: root, a systemd
// service with Delegate=yes, or a container with its own cgroup
// namespace. Where there is none, the guard, the process group and the
// marker variable do the work.

// Cgroups makes a cgroup v2 for each task, in one directory under the
// runner's own cgroup.
type Cgroups struct {
	base string
}

// OpenCgroups finds the runner's cgroup v2 and makes there the directory
// of the tasks of the runner whose work directory is workDir
// ("kiln-tasks-<hash of workDir>", so that two runners on a host have their
// own and a restarted runner finds its predecessor's). It returns nil and
// why when there is no cgroup v2 the runner may write.
func OpenCgroups(workDir string) (*Cgroups, error) {
	own, err := ownCgroup()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(workDir)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(abs))
	base := filepath.Join(own, "kiln-tasks-"+hex.EncodeToString(sum[:4]))
	// the empty directories of runners killed with SIGKILL: rmdir fails
	// on any cgroup still in use, so only those go
	if others, err := filepath.Glob(filepath.Join(own, "kiln-tasks-*")); err == nil {
		for _, o := range others {
			if o != base {
				_ = syscall.Rmdir(o)
			}
		}
	}
	if err := os.Mkdir(base, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("cgroup v2 at %s is not writable: %w", own, err)
	}
	if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
		return nil, fmt.Errorf("%s is not a cgroup v2: %w", base, err)
	}
	return &Cgroups{base: base}, nil
}

// Base is the directory of the tasks' cgroups.
func (c *Cgroups) Base() string { return c.base }

// Close removes the directory of the tasks' cgroups when it is empty (the
// runner stops with no task left).
func (c *Cgroups) Close() error {
	err := syscall.Rmdir(c.base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// New makes the cgroup of one task, after killing what a crashed
// predecessor may have left in one of the same name.
func (c *Cgroups) New(name string) (*Cgroup, error) {
	g := &Cgroup{path: filepath.Join(c.base, name)}
	if _, err := os.Stat(g.path); err == nil {
		g.Remove()
	}
	// another runner's start-up may have removed the directory while no
	// task of ours ran (see OpenCgroups)
	if err := os.MkdirAll(c.base, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup of the task: %w", err)
	}
	if err := os.Mkdir(g.path, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup of the task: %w", err)
	}
	return g, nil
}

// Sweep kills and removes every task cgroup left in the directory: those
// of tasks whose runner crashed. It returns how many processes it killed.
func (c *Cgroups) Sweep() int {
	ents, _ := os.ReadDir(c.base)
	killed := 0
	for _, e := range ents {
		if e.IsDir() {
			killed += (&Cgroup{path: filepath.Join(c.base, e.Name())}).Remove()
		}
	}
	return killed
}

// Cgroup is the cgroup v2 of one task.
type Cgroup struct {
	path string
}

// Path is the cgroup's directory.
func (g *Cgroup) Path() string { return g.path }

// Open opens the cgroup's directory, for starting a process in it
// (SysProcAttr.CgroupFD, clone3's CLONE_INTO_CGROUP: no window where the
// process runs outside it). The caller closes the file.
func (g *Cgroup) Open() (*os.File, error) { return os.Open(g.path) }

// Remove kills every process in the cgroup, waits until it is empty and
// removes it. It returns how many processes it killed.
func (g *Cgroup) Remove() int {
	killed := 0
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		pids := g.pids()
		if len(pids) == 0 {
			break
		}
		killed = max(killed, len(pids))
		// cgroup.kill (Linux 5.14) kills all at once, forks included
		if err := os.WriteFile(filepath.Join(g.path, "cgroup.kill"), []byte("1"), 0); err != nil {
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	// cgroup.procs empties before the cgroup is unpopulated
	for time.Now().Before(deadline) {
		if err := syscall.Rmdir(g.path); err == nil || errors.Is(err, fs.ErrNotExist) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return killed
}

// pids lists the processes in the cgroup.
func (g *Cgroup) pids() []int {
	f, err := os.Open(filepath.Join(g.path, "cgroup.procs"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// ownCgroup is the directory of this process's cgroup v2: its path in
// /proc/self/cgroup ("0::/a/b") under the mount point of the cgroup2 file
// system that holds it (/proc/self/mountinfo).
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("no cgroups: %w", err)
	}
	rel := ""
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel = p
		}
	}
	if rel == "" {
		return "", errors.New("this process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 {
			continue
		}
		root, mount := f[3], f[4]
		sub, ok := strings.CutPrefix(rel, root)
		if root == "/" {
			sub, ok = rel, true
		}
		if ok {
			return filepath.Join(mount, sub), nil
		}
	}
	return "", errors.New("no cgroup2 file system is mounted")
}
