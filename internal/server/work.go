package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/localrunners"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/scheduler"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
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

// startLocalRunners starts cfg.LocalRunners runners as child processes of
// this server (package localrunners supervises them), each a `kiln runner`
// talking to the server's API like any other runner: they share nothing
// with the server but its URL. Each gets a worker of its own (created
// enabled on first start) and a fresh token; the previous tokens of these
// workers are deleted. With cfg.LocalRunnersMetricsServer, runner i
// listens for scrapes on its port + i - 1.
func startLocalRunners(ctx context.Context, st store.Store, cfg Config, apiURL string, reg prometheus.Registerer, logger *slog.Logger) (*localrunners.Supervisor, error) {
	if cfg.LocalRunners == 0 {
		return nil, nil
	}
	command := cfg.RunnerCommand
	if len(command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("--local-runners: cannot find the kiln binary: %w", err)
		}
		command = []string{exe, "runner"}
	}
	var metrics []string
	if cfg.LocalRunnersMetricsServer != "" {
		addr, err := telemetry.ParseListenAddress(cfg.LocalRunnersMetricsServer)
		if err == nil {
			metrics, err = localrunners.MetricsAddresses(addr, cfg.LocalRunners)
		}
		if err != nil {
			return nil, fmt.Errorf("--local-runners-metrics-server: %w", err)
		}
	}
	host, _ := os.Hostname()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(apiURL, "http://"))
	rs := make([]localrunners.Runner, cfg.LocalRunners)
	for i := range rs {
		name := scheduler.WorkerName("local", host, port, strconv.Itoa(i+1))
		secret, err := localWorkerToken(ctx, st, name)
		if err != nil {
			return nil, fmt.Errorf("--local-runners: %w", err)
		}
		rs[i] = localrunners.Runner{Name: name, Token: secret}
		if metrics != nil {
			rs[i].MetricsServer = metrics[i]
		}
	}
	return localrunners.Start(localrunners.Config{
		Command: command, Server: apiURL, Dir: filepath.Join(cfg.DataDir, "runners"),
		ShutdownGrace: cfg.ShutdownTimeout / 2, Logger: logger.With("component", "local-runners"), Registerer: reg,
	}, rs)
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
