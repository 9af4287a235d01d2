package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// registerServerWorker finds or creates this process's worker of type
// server, enables it and marks it connected. Connecting requeues what a
// previous life of this server was running when it died.
func (s *Scheduler) registerServerWorker(ctx context.Context) (*model.Worker, error) {
	name := s.cfg.ServerWorkerName
	list, err := s.st.Workers().List(ctx, store.Query{Limit: 1, Filter: map[string]string{"name": name}})
	if err != nil {
		return nil, fmt.Errorf("server worker: %w", err)
	}
	var w *model.Worker
	if len(list) == 1 {
		w = &list[0]
		if w.WorkerType != model.WorkerServer {
			return nil, fmt.Errorf("server worker: a worker named %q exists and is not of type server; choose another server worker name", name)
		}
		if !w.Enabled {
			s.log.Warn("the server worker is disabled; Server tasks will wait until an admin enables it", "worker", name)
		}
	} else {
		w = &model.Worker{Name: name, WorkerType: model.WorkerServer, Enabled: true}
		if err := s.st.Workers().Create(ctx, w); err != nil {
			var fe *store.FieldError
			if !errors.As(err, &fe) || fe.Kind != store.Conflict {
				return nil, fmt.Errorf("server worker: %w", err)
			}
			// created concurrently by a replica with the same name
			list, err := s.st.Workers().List(ctx, store.Query{Limit: 1, Filter: map[string]string{"name": name}})
			if err != nil || len(list) == 0 {
				return nil, fmt.Errorf("server worker %q: %v", name, err)
			}
			w = &list[0]
		}
	}
	meta := model.WorkerMetadata{Version: telemetry.ReadBuildInfo().Version}
	w, requeued, err := s.st.ConnectWorker(ctx, w.ID, meta)
	if err != nil {
		return nil, fmt.Errorf("server worker: %w", err)
	}
	if len(requeued) > 0 {
		s.log.Info("requeued Server tasks interrupted by the previous run of this server", "work_requests", requeued)
	}
	s.log.Info("server worker ready", "worker", w.Name, "id", w.ID)
	return w, nil
}

// serverWorker claims and runs Server tasks one at a time until ctx ends,
// then marks the worker disconnected.
func (s *Scheduler) serverWorker(ctx context.Context, w *model.Worker) {
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := s.st.DisconnectWorker(dctx, w.ID); err != nil {
			s.log.Warn("marking the server worker disconnected", "error", err)
		}
	}()
	env := &tasks.ServerEnv{Store: s.st, Logger: s.log}
	for ctx.Err() == nil {
		poked := s.serverWake.waiting()
		wr, err := s.st.ClaimWorkRequest(ctx, w.ID)
		if err != nil {
			if !errors.Is(err, store.ErrNoWork) && ctx.Err() == nil {
				var fe *store.FieldError
				if !errors.As(err, &fe) { // not enabled: a warning was logged at start
					s.log.Warn("server worker: claiming work", "error", err)
				}
			}
			t := time.NewTimer(s.cfg.ClaimInterval)
			select {
			case <-ctx.Done():
			case <-poked:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		s.metrics.assigned(wr, model.WorkerServer)
		s.serverRunning.Store(wr.ID)
		out := tasks.RunServer(ctx, wr, env)
		output, _ := json.Marshal(out.Output)
		stats := out.Statistics
		c := store.Completion{Result: out.Result, Statistics: &stats, Output: output}
		// complete even when ctx ended: the task ran, its result is real
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_, err = s.st.CompleteWorkRequest(cctx, wr.ID, w.ID, c)
		cancel()
		s.serverRunning.Store(0)
		if err != nil {
			s.log.Warn("server worker: recording a result", "work_request", wr.ID, "error", err)
			continue
		}
		s.metrics.finished.WithLabelValues(string(wr.TaskType), string(out.Result)).Inc()
		s.log.Info("server task finished", "work_request", wr.ID, "task", wr.TaskName, "result", out.Result)
	}
}
