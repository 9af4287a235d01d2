package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/hostarch"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/pool"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/tasks"
)

// LocalPool is the name of the worker pool that --local-runners keeps.
const LocalPool = "local"

// localStartupTimeout is how long a local runner may take to connect: a
// child process on this host does it in a second.
const localStartupTimeout = time.Minute

// newAutoscaler builds this server's worker pool autoscaler with both
// providers: process instances are `kiln runner` children of this server
// (their work directories and logs in <data-dir>/runners/), exec
// instances are whatever the pool's executable makes of them. Instances'
// runners connect to apiURL unless a pool says otherwise.
func newAutoscaler(st store.Store, cfg Config, apiURL string, reg prometheus.Registerer, logger *slog.Logger) (*pool.Autoscaler, error) {
	command := cfg.RunnerCommand
	if len(command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("worker pools: cannot find the kiln binary for process pools: %w", err)
		}
		command = []string{exe, "runner"}
	}
	log := logger.With("component", "pool")
	process, err := pool.NewProcess(pool.ProcessConfig{Command: command, Dir: filepath.Join(cfg.DataDir, "runners"),
		ShutdownGrace: cfg.ShutdownTimeout / 2, Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	return pool.New(st, pool.Config{
		Providers:    map[string]pool.Provider{model.ProviderProcess: process, model.ProviderExec: &pool.Exec{}},
		ServerURL:    apiURL,
		Interval:     cfg.PoolInterval,
		ListInterval: cfg.PoolListInterval,
		StopTimeout:  cfg.ShutdownTimeout,
		Logger:       log,
		Registerer:   reg,
	})
}

// ensureLocalPool makes the worker pool LocalPool what --local-runners N
// asks for: a process pool of exactly N runners (min_idle = max_instances
// = N) for this host's architectures, whose first runner listens for
// scrapes on cfg.LocalRunnersMetricsServer and the next ones on the
// following ports. It is created when missing and set again at every
// start with the flag; without the flag an existing pool is left as the
// admins made it. The farm's autoscaler runs its instances, on the server
// that acts for the farm.
func ensureLocalPool(ctx context.Context, st store.Store, cfg Config) error {
	if cfg.LocalRunners == 0 {
		return nil
	}
	native, foreign := hostarch.Detect(ctx)
	settings := map[string]any{}
	if cfg.LocalRunnersMetricsServer != "" {
		settings["metrics_server"] = cfg.LocalRunnersMetricsServer
	}
	raw, _ := json.Marshal(settings)
	want := func(p *model.WorkerPool) error {
		p.Provider, p.Settings, p.Enabled = model.ProviderProcess, raw, true
		p.Architectures, p.Backends = append([]string{native}, foreign...), tasks.DetectBackends(ctx)
		p.MinIdle, p.MaxInstances = cfg.LocalRunners, cfg.LocalRunners
		if p.IdleTimeout <= 0 {
			p.IdleTimeout = model.Duration(10 * time.Minute)
		}
		p.StartupTimeout = model.Duration(localStartupTimeout)
		if err := pool.CheckSettings(p); err != nil {
			return fmt.Errorf("--local-runners-metrics-server: %w", err)
		}
		return nil
	}
	existing, err := st.WorkerPools().Lookup(ctx, LocalPool, nil)
	switch {
	case errors.Is(err, store.ErrNotFound):
		p := &model.WorkerPool{Name: LocalPool}
		if err := want(p); err != nil {
			return err
		}
		err = st.WorkerPools().Create(ctx, p)
	case err == nil:
		_, err = st.WorkerPools().Update(ctx, existing.ID, nil, want)
	}
	if err != nil {
		return fmt.Errorf("--local-runners: worker pool %q: %w", LocalPool, err)
	}
	return nil
}
