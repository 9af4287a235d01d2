package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/kiln-build/kiln/internal/model"
)

// retryDependents retries, together with wr, the requests that were
// aborted because wr did not succeed, as long as their workflow still
// runs: they go back to blocked and wait for wr again. Without this, a
// workflow whose failed step is retried and then succeeds would still fail,
// because the steps after it stayed aborted. Requests aborted for another
// reason (by a user, or with their workflow) stay aborted. Each counts one
// retry, as a retried request does.
func (s *SQL) retryDependents(ctx context.Context, t *tx, wr *model.WorkRequest) error {
	if wr.ParentID == nil {
		return nil
	}
	running, err := t.exists(ctx, "SELECT 1 FROM work_requests WHERE id = $1 AND status = 'running'", *wr.ParentID)
	if err != nil || !running {
		return err
	}
	ids, err := t.ids(ctx, `SELECT w.id FROM work_request_dependencies d JOIN work_requests w ON w.id = d.work_request_id
		WHERE d.depends_on_id = $1 AND w.status = 'aborted' ORDER BY w.id`, wr.ID)
	if err != nil {
		return err
	}
	because := fmt.Sprintf("dependency %d ended ", wr.ID) // the reason settleDependents gives
	for _, id := range ids {
		dep, err := s.workRequests().get(ctx, t, id, nil, true)
		if err != nil {
			return err
		}
		var out struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(dep.Output, &out)
		if !strings.HasPrefix(out.Error, because) {
			continue
		}
		retried, err := s.workRequests().update(ctx, t, id, nil, func(w *model.WorkRequest) error {
			w.Status = model.StatusBlocked
			w.Result, w.WorkerID, w.StartedAt, w.CompletedAt, w.Statistics, w.Output, w.ExecutionTime = "", nil, nil, nil, nil, nil, nil
			w.Retries++
			return nil
		})
		if err != nil {
			return err
		}
		if err := s.retryDependents(ctx, t, retried); err != nil {
			return err
		}
	}
	return nil
}
