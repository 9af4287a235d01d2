package localrunners

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// termSignal asks a runner to shut down gracefully.
const termSignal = syscall.SIGTERM

// child is one supervised runner process, restarted as often as needed.
type child struct {
	spec    Runner
	args    []string
	env     []string
	logPath string

	mu     sync.Mutex
	proc   *os.Process   // the running process; nil between runs
	exited chan struct{} // closed when proc has exited
}

// supervise runs c until the supervisor stops: start, wait, log the exit,
// back off, start again.
func (s *Supervisor) supervise(c *child) {
	defer s.wg.Done()
	b := s.cfg.NewBackOff()
	b.Reset()
	for {
		started := time.Now()
		done, state, err := s.start(c)
		if err == nil && done == nil {
			return // stopping: not started
		}
		if err == nil {
			select {
			case <-done:
			case <-s.stop:
				return // Stop signals, waits for and reaps it
			}
			if s.stopping() {
				return // it exited because the server stops
			}
			err = state()
		}
		ran := time.Since(started)
		if ran >= s.cfg.StableAfter {
			b.Reset()
		}
		wait := b.NextBackOff()
		s.exits.Inc()
		s.log.Error("local runner exited; starting it again after a pause",
			"worker", c.spec.Name, "status", describe(err), "ran_for", ran.Round(time.Millisecond).String(),
			"restart_in", wait.Round(time.Millisecond).String(), "log", c.logPath, "last_log_line", lastLine(c.logPath))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.stop:
			t.Stop()
			return
		}
	}
}

// start starts one run of c. It returns a channel closed when the process
// exits and a function giving its exit error; (nil, nil, nil) when the
// supervisor is stopping, so nothing was started.
func (s *Supervisor) start(c *child) (<-chan struct{}, func() error, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.stopping() {
		return nil, nil, nil
	}
	logf, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, nil, err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(s.cfg.Command[0], c.args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// The child dies with the server, even a server killed with SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	exited := make(chan struct{})
	var waitErr error
	c.proc, c.exited = cmd.Process, exited
	s.running.Inc()
	s.log.Info("local runner started", "worker", c.spec.Name, "pid", cmd.Process.Pid, "log", c.logPath,
		"metrics_server", c.spec.MetricsServer)
	go func() {
		waitErr = cmd.Wait()
		s.running.Dec()
		c.mu.Lock()
		c.proc = nil
		c.mu.Unlock()
		close(exited)
	}()
	return exited, func() error { return waitErr }, nil
}

// describe says how a process ended, or why it could not start.
func describe(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit status 0"
	case errors.As(err, &ee):
		return ee.ProcessState.String()
	}
	return "not started: " + err.Error()
}

// lastLine returns the last non-empty line of the log at path (from its
// last 4 KiB), which is where a runner says why it stopped.
func lastLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 4 << 10
	if info, err := f.Stat(); err == nil && info.Size() > tail {
		f.Seek(info.Size()-tail, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := bytes.Split(bytes.TrimRight(b, "\r\n"), []byte("\n"))
	return strings.TrimSpace(string(lines[len(lines)-1]))
}
