package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/kiln-build/kiln/internal/model"
)

func workerDef() *tableDef[model.Worker] {
	return &tableDef[model.Worker]{
		name:  "worker",
		table: "workers",
		columns: []string{"name", "worker_type", "enabled", "connected_at", "last_seen_at", "metadata",
			"worker_pool_id", "created_at"},
		id: func(o *model.Worker) *int64 { return &o.ID },
		values: func(o *model.Worker) []any {
			meta, _ := json.Marshal(o.Metadata)
			return []any{o.Name, string(o.WorkerType), o.Enabled, nullMicros(o.ConnectedAt), nullMicros(o.LastSeenAt),
				jsonDoc(meta), nullInt(o.PoolID), toMicros(o.CreatedAt)}
		},
		stamp:      func(o *model.Worker, now int64) { o.CreatedAt = fromMicros(now) },
		scan:       func(r scanner) (*model.Worker, error) { return scanWorker(r) },
		filters:    map[string]string{"name": "name", "worker_type": "worker_type", "enabled": "enabled", "worker_pool": "worker_pool_id"},
		nameColumn: "name",
		load: func(ctx context.Context, t *tx, o *model.Worker) error {
			busy, err := t.exists(ctx, "SELECT 1 FROM work_requests WHERE worker_id = $1 AND status = 'running' LIMIT 1", o.ID)
			o.Busy = busy
			return err
		},
		check: func(ctx context.Context, t *tx, old, o *model.Worker) error {
			if err := checkName("name", o.Name); err != nil {
				return err
			}
			if !o.WorkerType.Valid() {
				return invalid("worker_type", "%q is not a worker type: use external, server or signing", o.WorkerType)
			}
			if o.PoolID != nil {
				if err := t.ref(ctx, "worker_pool", "worker_pools", *o.PoolID); err != nil {
					return err
				}
			}
			return t.unique(ctx, "workers", "name", o.Name, o.ID, "worker")
		},
		totals: func(ctx context.Context, t *tx, o *model.Worker) ([]contribution, error) {
			return []contribution{one("workers", workerLabels(o))}, nil
		},
		inUse: func(ctx context.Context, t *tx, o *model.Worker) error {
			if ok, err := t.exists(ctx, "SELECT 1 FROM work_requests WHERE worker_id = $1 LIMIT 1", o.ID); err != nil || ok {
				if err == nil {
					err = conflict("", "worker %q has run work requests; disable it instead (enabled: false)", o.Name)
				}
				return err
			}
			return t.deleteTokensWhere(ctx, "worker_id", o.ID)
		},
	}
}

// scanWorker reads the id and columns of a worker, then extra.
func scanWorker(r scanner, extra ...any) (*model.Worker, error) {
	var w workerRow
	if err := r.Scan(append(w.dest(), extra...)...); err != nil {
		return nil, err
	}
	return w.worker()
}

// workerRow receives the id and columns of a worker from a query that may
// read more.
type workerRow struct {
	o                     model.Worker
	typ                   string
	connected, seen, pool sql.NullInt64
	meta                  []byte
	created               int64
}

func (w *workerRow) dest() []any {
	return []any{&w.o.ID, &w.o.Name, &w.typ, &w.o.Enabled, &w.connected, &w.seen, &w.meta, &w.pool, &w.created}
}

func (w *workerRow) worker() (*model.Worker, error) {
	o := w.o
	if err := json.Unmarshal(w.meta, &o.Metadata); err != nil {
		return nil, fmt.Errorf("worker %d metadata: %w", o.ID, err)
	}
	o.WorkerType, o.ConnectedAt, o.LastSeenAt, o.PoolID, o.CreatedAt = model.WorkerType(w.typ), timePtr(w.connected), timePtr(w.seen), int64Ptr(w.pool), fromMicros(w.created)
	return &o, nil
}

func (s *SQL) getWorker(ctx context.Context, t *tx, id int64) (*model.Worker, error) {
	return s.workers().get(ctx, t, id, nil, false)
}

// workerLabels are the labels of the workers family. Pool workers carry
// their pool; external workers carry their architectures (sorted, joined
// with commas — the endpoint expands them into architecture_<a> labels) and
// host architecture.
func workerLabels(o *model.Worker) Labels {
	l := Labels{"connected": boolLabel(o.ConnectedAt != nil), "busy": boolLabel(o.Busy), "worker_type": string(o.WorkerType)}
	if o.PoolID != nil {
		l["worker_pool_id"] = itoa(*o.PoolID)
	}
	if o.WorkerType == model.WorkerExternal {
		archs := append([]string(nil), o.Metadata.Architectures...)
		sort.Strings(archs)
		l["architectures"] = strings.Join(archs, ",")
		l["host_architecture"] = o.Metadata.HostArchitecture
	}
	return l
}
