package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/scheduler"
	"github.com/kiln-build/kiln/internal/store"
)

// newScheduler builds the scheduler of this server process. Its server
// worker is named after the host and the API port, so that replicas on one
// database (even on one host) have their own, and a restarted server finds
// its previous one.
func newScheduler(st store.Store, cfg Config, reg prometheus.Registerer, logger *slog.Logger, addr net.Addr) (*scheduler.Scheduler, error) {
	host, _ := os.Hostname()
	port := ""
	if tcp, ok := addr.(*net.TCPAddr); ok {
		port = strconv.Itoa(tcp.Port)
	}
	return scheduler.New(st, scheduler.Config{
		HeartbeatTimeout: cfg.HeartbeatTimeout,
		ClaimInterval:    cfg.ClaimInterval,
		ServerWorkerName: scheduler.WorkerName("server", host, port),
		Registerer:       reg,
		Logger:           logger.With("component", "scheduler"),
	})
}

// localRunners are the runner processes started by --local-runners.
type localRunners struct {
	logger *slog.Logger
	mu     sync.Mutex
	procs  []*exec.Cmd
	done   []chan struct{}
}

// startLocalRunners starts n runners as child processes of this server,
// each a `kiln runner` talking to the server's API like any other runner:
// they share nothing with the server but its URL. Each gets a worker of its
// own (created enabled on first start) and a fresh token, passed in the
// environment so that it stays out of the process list; the previous
// tokens of these workers are deleted. Their logs go to
// <data-dir>/runners/<name>.log. The children die with the server, even a
// server killed with SIGKILL (Pdeathsig).
func startLocalRunners(ctx context.Context, st store.Store, cfg Config, apiURL string, logger *slog.Logger) (*localRunners, error) {
	lr := &localRunners{logger: logger}
	if cfg.LocalRunners == 0 {
		return lr, nil
	}
	command := cfg.RunnerCommand
	if len(command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("--local-runners: cannot find the kiln binary: %w", err)
		}
		command = []string{exe, "runner"}
	}
	base, err := filepath.Abs(filepath.Join(cfg.DataDir, "runners"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(base, 0o750); err != nil {
		return nil, fmt.Errorf("--local-runners: %w", err)
	}
	host, _ := os.Hostname()
	_, port, _ := net.SplitHostPort(apiURL[len("http://"):])
	for i := 1; i <= cfg.LocalRunners; i++ {
		name := scheduler.WorkerName("local", host, port, strconv.Itoa(i))
		secret, err := localWorkerToken(ctx, st, name)
		if err != nil {
			lr.stop(time.Second)
			return nil, fmt.Errorf("--local-runners: %w", err)
		}
		logPath := filepath.Join(base, name+".log")
		logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			lr.stop(time.Second)
			return nil, fmt.Errorf("--local-runners: %w", err)
		}
		args := append(append([]string{}, command[1:]...),
			"--server", apiURL, "--name", name, "--work-dir", filepath.Join(base, name),
			"--shutdown-grace", (cfg.ShutdownTimeout / 2).String())
		cmd := exec.Command(command[0], args...)
		cmd.Env = append(os.Environ(), "KILN_TOKEN="+secret)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			logf.Close()
			lr.stop(time.Second)
			return nil, fmt.Errorf("--local-runners: starting %s: %w", command[0], err)
		}
		logf.Close() // the child has its own copy
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		lr.mu.Lock()
		lr.procs, lr.done = append(lr.procs, cmd), append(lr.done, done)
		lr.mu.Unlock()
		logger.Info("local runner started", "worker", name, "pid", cmd.Process.Pid, "log", logPath)
	}
	return lr, nil
}

// localWorkerToken finds or creates the enabled external worker name and
// gives it a fresh token, deleting its older ones.
func localWorkerToken(ctx context.Context, st store.Store, name string) (string, error) {
	list, err := st.Workers().List(ctx, store.Query{Limit: 1, Filter: map[string]string{"name": name}})
	if err != nil {
		return "", err
	}
	var w *model.Worker
	if len(list) == 1 {
		w = &list[0]
		if w.WorkerType != model.WorkerExternal {
			return "", fmt.Errorf("worker %q exists and is not an external worker", name)
		}
		if !w.Enabled {
			if w, err = st.Workers().Update(ctx, w.ID, nil, func(w *model.Worker) error { w.Enabled = true; return nil }); err != nil {
				return "", err
			}
		}
		old, err := st.Tokens().List(ctx, store.Query{Limit: store.MaxPageSize, Filter: map[string]string{"worker": strconv.FormatInt(w.ID, 10)}})
		if err != nil {
			return "", err
		}
		for _, t := range old {
			if err := st.Tokens().Delete(ctx, t.ID, nil); err != nil && !errors.Is(err, store.ErrNotFound) {
				return "", err
			}
		}
	} else {
		w = &model.Worker{Name: name, WorkerType: model.WorkerExternal, Enabled: true}
		if err := st.Workers().Create(ctx, w); err != nil {
			return "", err
		}
	}
	tok, err := st.CreateToken(ctx, model.Token{WorkerID: &w.ID, Enabled: true, Comment: "local runner of the server"})
	if err != nil {
		return "", err
	}
	return tok.Secret, nil
}

// stop asks every local runner to stop (SIGTERM: they finish or hand back
// their task) and kills those still running after timeout.
func (lr *localRunners) stop(timeout time.Duration) {
	lr.mu.Lock()
	procs, done := lr.procs, lr.done
	lr.procs, lr.done = nil, nil
	lr.mu.Unlock()
	for _, p := range procs {
		p.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(timeout)
	for i, d := range done {
		select {
		case <-d:
		case <-deadline:
			lr.logger.Warn("local runner did not stop in time; killing it", "pid", procs[i].Process.Pid)
			procs[i].Process.Kill()
			<-d
		}
	}
}
