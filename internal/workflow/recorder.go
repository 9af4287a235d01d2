package workflow

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// MaxQueue bounds the finished workflows waiting for their metrics. The
// queue only fills when the database stalls; beyond it, workflows are
// logged and not counted, rather than the server's memory growing.
const MaxQueue = 10000

// Source is what a Recorder reads: the template of a finished workflow,
// its workspace's name and its children. store.Store is one.
type Source interface {
	WorkflowTemplates() store.Table[model.WorkflowTemplate]
	Workspaces() store.Table[model.Workspace]
	WorkRequests() store.Table[model.WorkRequest]
}

// Recorder feeds Metrics from the store: Hook is registered with the
// store's OnFinish, and Run (or Drain, in tests) records each finished
// workflow root. Roots of workflows not started from a template, and
// children, are ignored: children are recorded with their root, in their
// final state, which is what makes a retried step count once.
//
// Recording reads the database (template, children), which a FinishHook
// must not do on the committing goroutine; Hook only queues the root.
type Recorder struct {
	m   *Metrics
	src Source
	log *slog.Logger

	mu    sync.Mutex
	queue []model.WorkRequest
	wake  chan struct{}
}

// NewRecorder returns a Recorder that records into m what it reads from
// src. A nil logger discards logs.
func NewRecorder(m *Metrics, src Source, log *slog.Logger) *Recorder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{m: m, src: src, log: log, wake: make(chan struct{}, 1)}
}

// Hook is a store.FinishHook: it queues finished workflow roots that were
// started from a template, and returns at once.
func (r *Recorder) Hook(wr model.WorkRequest) {
	if wr.TaskType != model.TaskWorkflow || wr.ParentID != nil || wr.WorkflowTemplateID == nil {
		return
	}
	r.mu.Lock()
	full := len(r.queue) >= MaxQueue
	if !full {
		r.queue = append(r.queue, wr)
	}
	r.mu.Unlock()
	if full {
		r.log.Warn("workflow metrics queue is full; the workflow is not counted", "work_request", wr.ID)
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run records queued workflows until ctx ends.
func (r *Recorder) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
			r.Drain(ctx)
		}
	}
}

// Drain records every workflow queued so far and returns the first error;
// a workflow that fails is logged and not retried, so that one broken
// template cannot stall the others.
func (r *Recorder) Drain(ctx context.Context) error {
	r.mu.Lock()
	batch := r.queue
	r.queue = nil
	r.mu.Unlock()
	var first error
	for i := range batch {
		if err := r.record(ctx, &batch[i]); err != nil {
			r.log.Error("cannot record workflow metrics", "work_request", batch[i].ID, "err", err)
			if first == nil {
				first = err
			}
		}
	}
	return first
}

func (r *Recorder) record(ctx context.Context, root *model.WorkRequest) error {
	mt, err := r.src.WorkflowTemplates().Get(ctx, *root.WorkflowTemplateID, nil)
	if err != nil {
		return fmt.Errorf("workflow template %d: %w", *root.WorkflowTemplateID, err)
	}
	t, err := FromModel(mt)
	if err != nil {
		return fmt.Errorf("workflow template %q: %w", mt.Name, err)
	}
	if countMetrics(t) == 0 {
		return nil // nothing to read the children for
	}
	ws, err := r.src.Workspaces().Get(ctx, mt.WorkspaceID, nil)
	if err != nil {
		return fmt.Errorf("workspace %d: %w", mt.WorkspaceID, err)
	}
	var children []model.WorkRequest
	q := store.Query{Limit: store.MaxPageSize, Filter: map[string]string{"parent": strconv.FormatInt(root.ID, 10)}}
	for {
		page, err := r.src.WorkRequests().List(ctx, q)
		if err != nil {
			return fmt.Errorf("children of work request %d: %w", root.ID, err)
		}
		children = append(children, page...)
		if len(page) < q.Limit {
			break
		}
		q.After = page[len(page)-1].ID
	}
	return r.m.Record(Run{Template: t, Workspace: ws.Name, Root: root, Children: children})
}
